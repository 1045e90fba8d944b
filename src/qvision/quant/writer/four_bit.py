"""4-bit activations as ONNX Runtime 1.32 accepts them: the grids the plan gives, in
containers and graph shapes that stay clear of two of its faults (see each function). The
values are the plan's: these change types and names, never a number."""

from __future__ import annotations

from collections import defaultdict

import onnx

from qvision.model.graph import GraphView
from qvision.quant.plan import QuantPlan, QuantSpec


def written_specs(model: onnx.ModelProto, plan: QuantPlan) -> dict[str, QuantSpec]:
    """The activation specs as written: each quantized Conv's 4-bit input and output of
    opposite signedness (the same grid: int4 with zero point z - 8 is uint4 with z). ONNX
    Runtime 1.32 fuses DQ -> Conv -> Q into QLinearConv whenever the two types match, 4-bit
    ones included, and then fails to load the model (no such kernel). A tensor has one
    producer, so Conv input -> output links form a forest: alternating always works."""
    if not any(sp.bits == 4 for sp in plan.activations.values()):
        return plan.activations
    view, decisions = GraphView(model), plan.nodes

    def after_folds(t: str) -> str:
        while (nxt := view.consumers.get(t, [])) and len(nxt) == 1:
            d = decisions.get(nxt[0].name)
            if d is None or d.action != "fold":
                break
            t = nxt[0].output[0]
        return t

    def four(t: str) -> bool:
        return t in plan.activations and plan.activations[t].bits == 4

    links: dict[str, list[str]] = defaultdict(list)
    for node in model.graph.node:
        d = decisions.get(node.name)
        if d and d.action == "quantize" and node.op_type == "Conv":
            a, b = node.input[0], after_folds(node.output[0])
            if four(a) and four(b):
                links[a].append(b)
                links[b].append(a)
    flipped: dict[str, bool] = {}
    for root in links:
        if root in flipped:
            continue
        flipped[root], todo = False, [root]
        while todo:
            t = todo.pop()
            for u in links[t]:
                if u not in flipped:
                    flipped[u] = not flipped[t]
                    todo.append(u)
    out = dict(plan.activations)
    for t, flip in flipped.items():
        if flip:
            spec = plan.activations[t]
            signed = spec.dtype == "int4"
            out[t] = spec.model_copy(
                update={
                    "dtype": "uint4" if signed else "int4",
                    "zero_point": [z + (8 if signed else -8) for z in spec.zero_point],
                }
            )
    return out


def drop_folds(model: onnx.ModelProto, plan: QuantPlan) -> None:
    """Remove a folded Relu/Clip whose output only a 4-bit QuantizeLinear reads, giving its
    name to its producer's output: the 4-bit grid enforces the bounds anyway, and ONNX
    Runtime 1.32's Relu/Clip-into-Q fusion fails on 4-bit zero points ('Unexpected data
    type for QuantizeLinear input y_zero_point'). Tensor names stay the plan's."""
    g = model.graph
    view = GraphView(model)
    outputs = {o.name for o in g.output}
    drop = []
    for node in g.node:
        d = plan.nodes.get(node.name)
        spec = plan.activations.get(node.output[0])
        if node.op_type not in ("Relu", "Clip") or d is None or d.action != "fold":
            continue
        if spec is None or spec.bits > 4 or node.output[0] in outputs:
            continue
        prod = view.producer.get(node.input[0])
        readers = view.consumers.get(node.output[0], [])
        if prod is None or len(view.consumers.get(node.input[0], [])) != 1:
            continue
        if node.input[0] in outputs or any(r.op_type != "QuantizeLinear" for r in readers):
            continue
        prod.output[list(prod.output).index(node.input[0])] = node.output[0]
        drop.append(node)
    for node in drop:
        g.node.remove(node)
