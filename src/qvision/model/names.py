"""Layer names a person can read, beside the ONNX node names plans and options use.

Exporters often generate node names that say nothing about the layer: torch.onnx's
dynamo exporter writes ``node_Conv_810`` and ``n4_2``, paddle2onnx ``p2o.Conv.12``, older
exporters ``Conv_3`` or nothing (qvision then names the node ``Conv_<index>``). For those,
the label says where the layer is and what shape it has::

    Conv #12 3×3 32→64          the 12th Conv in graph order, 3×3 kernel, 32 in, 64 out
    Conv #2 3×3 depthwise 32    a depthwise Conv (one group per channel)
    Gemm #1 1280→1000 (_fc)     with the torch module it came from, when the exporter
                                recorded it (dynamo's pkg.torch.onnx.name_scopes metadata)
    Add #3                      ops without a weight: position only

Counting runs over the nodes of the model the names belong to (for plans and analysis,
the model as qvision prepares it: BatchNormalization folded into its Conv and so on), in
the graph's order, which ONNX keeps topological.

Meaningful names are kept: TorchScript-style scope paths only lose the repeated prefixes
(``/features/features.0/features.0.0/Conv`` -> ``features.0.0/Conv``), the op type is
added when the name does not say it, and the shape follows (``features.0.0/Conv 3×3
3→32``). The label is for reading only: plans, ``--keep-float`` and ``--layer-bits`` take
the node name.
"""

from __future__ import annotations

import ast
import heapq
import re
from collections import defaultdict

import onnx

from qvision.model.graph import node_attr

_INDEX = re.compile(r"([_.:-]?\d+)+$")  # trailing counters: Conv_3, p2o.Conv.12, n4_2
_GENERATED_PREFIXES = ("node_", "p2o.")  # torch.onnx dynamo / onnxscript; paddle2onnx
_AUTO = re.compile(r"n\d+(_\d+)*")  # onnxscript's value-numbered names
_SCOPES = "pkg.torch.onnx.name_scopes"
_CLASSES = "pkg.torch.onnx.class_hierarchy"


def short_name(name: str) -> str:
    """A TorchScript scope path without the components the next one repeats:
    '/layer1/layer1.0/conv1/Conv' -> 'layer1.0/conv1/Conv'; other names unchanged."""
    parts = [p for p in name.split("/") if p]
    if len(parts) < 2:
        return parts[0] if parts else name
    kept = [p for p, nxt in zip(parts, parts[1:], strict=False) if not nxt.startswith(p + ".")]
    return "/".join([*kept, parts[-1]])


def is_generated(name: str, op_type: str) -> bool:
    """True when ``name`` was made up by an exporter (or by qvision for an unnamed node)
    and names no layer: empty, digits, ``node_*``, ``n4_2``, ``p2o.*``, the op type with a
    counter (``Conv_3``, ``/Conv_1``)."""
    if not name or name.isdigit() or name.startswith(_GENERATED_PREFIXES):
        return True
    if _AUTO.fullmatch(name):
        return True
    short = short_name(name)
    if "/" in short:  # a module path: meaningful
        return False
    return _INDEX.sub("", short).lower() in ("", op_type.lower())


def layer_shape(node: onnx.NodeProto, weight_shapes: dict[str, list[int]]) -> str:
    """'3×3 32→64' for a Conv with a constant weight ('3×3 depthwise 32', '… g4' when
    grouped), '1280→1000' for a Gemm or MatMul with one; '' otherwise."""
    w = weight_shapes.get(node.input[1]) if len(node.input) > 1 else None
    if w is None:
        return ""
    op = node.op_type
    if op in ("Conv", "ConvTranspose") and len(w) >= 3:
        group = int(node_attr(node, "group", 1) or 1)
        kernel = "×".join(str(d) for d in w[2:]) if len(w) > 3 else f"k{w[2]}"
        cin, cout = (w[1] * group, w[0]) if op == "Conv" else (w[0], w[1] * group)
        if group > 1 and group == cin == cout:
            return f"{kernel} depthwise {cout}"
        return f"{kernel} {cin}→{cout}" + (f" g{group}" if group > 1 else "")
    if op in ("Gemm", "MatMul") and len(w) == 2:
        k, n = w
        if op == "Gemm" and node_attr(node, "transB", 0):
            k, n = n, k
        return f"{k}→{n}"
    return ""


def torch_scope(node: onnx.NodeProto) -> str | None:
    """The torch module a node was exported from, when torch.onnx (dynamo) recorded it:
    the innermost module scope, skipping a BatchNorm that was folded into a Conv."""
    meta = {p.key: p.value for p in node.metadata_props}
    if _SCOPES not in meta:
        return None
    try:
        scopes = ast.literal_eval(meta[_SCOPES])
        classes = ast.literal_eval(meta.get(_CLASSES, "[]"))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(scopes, list) or not isinstance(classes, list):
        return None
    classes = [str(c) for c in classes] + [""] * (len(scopes) - len(classes))
    modules = [
        (str(s), c)
        for s, c in zip(scopes, classes, strict=False)
        if s and not c.startswith("aten.")
    ]
    while (
        modules and "batchnorm" in modules[-1][1].lower() and node.op_type != "BatchNormalization"
    ):
        modules.pop()
    return modules[-1][0] if modules else None


def _graph_order(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes in their stored order where that is topological (ONNX requires it), else
    the topological order closest to it (a rewrite may have appended a node)."""
    nodes = list(graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    deps = [{producer[x] for x in n.input if x in producer} - {i} for i, n in enumerate(nodes)]
    users: dict[int, list[int]] = defaultdict(list)
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    pending = [len(d) for d in deps]
    ready = [i for i, p in enumerate(pending) if p == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for j in users[i]:
            pending[j] -= 1
            if pending[j] == 0:
                heapq.heappush(ready, j)
    return order if len(order) == len(nodes) else nodes  # a cycle: as stored


def layer_labels(model: onnx.ModelProto) -> dict[str, str]:
    """Node name -> readable label (see the module docstring) for every node of ``model``."""
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    counts: dict[str, int] = defaultdict(int)
    labels: dict[str, str] = {}
    for node in _graph_order(model.graph):
        op = node.op_type
        counts[op] += 1
        scope = None
        if is_generated(node.name, op):
            ident = f"{op} #{counts[op]}"
            scope = torch_scope(node)
        else:
            ident = short_name(node.name)
            if op.lower() not in ident.lower():
                ident += f" {op}"
        label = " ".join(x for x in (ident, layer_shape(node, shapes)) if x)
        labels[node.name] = f"{label} ({scope})" if scope else label
    return labels


def display_name(node: str, label: str | None) -> str:
    """What a table shows for a layer: its label where one is known, else the node name."""
    return label or node
