"""A read-only view of an ONNX graph: who produces and consumes each tensor, in what order."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import numpy_helper


class GraphView:
    """Indexes over ``model.graph``. Rebuild it after editing the graph."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.graph.node:
            for out in node.output:
                if out:
                    self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers[inp].append(node)
        self.outputs = [o.name for o in self.graph.output]
        self.inputs = [i.name for i in self.graph.input if i.name not in self.initializers]

    def weight(self, name: str):
        """The initializer ``name`` as a numpy array, or None if it is not constant."""
        tensor = self.initializers.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def elem_type(self, name: str) -> int | None:
        """ONNX element type of a tensor when known (initializer or inferred value info)."""
        if name in self.initializers:
            return self.initializers[name].data_type
        if not hasattr(self, "_types"):
            self._types = {
                v.name: v.type.tensor_type.elem_type
                for v in [*self.graph.value_info, *self.graph.input, *self.graph.output]
                if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type
            }
        return self._types.get(name)

    def is_constant(self, name: str) -> bool:
        return name in self.initializers

    def topological_order(self) -> list[onnx.NodeProto]:
        """Nodes in an order where each comes after the producers of its inputs (Kahn)."""
        nodes = list(self.graph.node)
        index = {id(n): i for i, n in enumerate(nodes)}
        pending = [0] * len(nodes)
        for i, node in enumerate(nodes):
            pending[i] = len({x for x in node.input if x in self.producer})
        ready = deque(i for i, p in enumerate(pending) if p == 0)
        order = []
        while ready:
            i = ready.popleft()
            order.append(nodes[i])
            done = set()
            for out in nodes[i].output:
                for consumer in self.consumers.get(out, []):
                    j = index[id(consumer)]
                    if (j, out) not in done:
                        done.add((j, out))
                        pending[j] -= 1
                        if pending[j] == 0:
                            ready.append(j)
        if len(order) != len(nodes):
            raise ValueError("graph has a cycle")
        return order

    def next_nodes(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        return [c for out in node.output for c in self.consumers.get(out, [])]

    def match_chain(
        self, op_types: Sequence[str | Callable[[onnx.NodeProto], bool]]
    ) -> list[list[onnx.NodeProto]]:
        """Every chain of nodes matching ``op_types`` where each link has a single consumer.

        An element is an op type name ("Conv"), a set of names joined by '|' ("Relu|Clip"),
        or a predicate on the node.
        """

        def ok(node: onnx.NodeProto, pat) -> bool:
            if callable(pat):
                return bool(pat(node))
            return node.op_type in pat.split("|")

        matches = []
        for start in self.graph.node:
            if not ok(start, op_types[0]):
                continue
            chain = [start]
            for pat in op_types[1:]:
                nxt = self.next_nodes(chain[-1])
                if len(nxt) != 1 or chain[-1].output[0] in self.outputs or not ok(nxt[0], pat):
                    break
                chain.append(nxt[0])
            if len(chain) == len(op_types):
                matches.append(chain)
        return matches

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for node in self.graph.node:
            counts[node.op_type] += 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def node_attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def clip_bounds(node: onnx.NodeProto, view: GraphView) -> tuple[float, float] | None:
    """A Clip's constant (min, max), +-inf where absent; None if a bound is computed."""
    lo, hi = node_attr(node, "min"), node_attr(node, "max")
    for i in (1, 2):
        if len(node.input) > i and node.input[i]:
            w = view.weight(node.input[i])
            if w is None:
                return None
            lo, hi = (float(w), hi) if i == 1 else (lo, float(w))
    return (lo if lo is not None else -np.inf, hi if hi is not None else np.inf)
