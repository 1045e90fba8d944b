"""Statistics + target profile -> QuantPlan. Decides, never writes ONNX.

Placement follows what ONNX Runtime fuses: a quantized node's activation inputs carry
one Q/DQ pair after their producer; Relu/Clip after a quantized node are folded into
that pair's range; data-movement ops share their input's scale; Concat shares one scale
across inputs and output.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx

from qvision.model.graph import GraphView, clip_bounds, node_attr
from qvision.model.names import is_generated, layer_labels
from qvision.model.ops import KINDS, WEIGHTED_KINDS, WEIGHTED_OPS, is_depthwise, layer
from qvision.qmath import QFormat, low_bit, qparams
from qvision.quant.constraints import clip_caps, fit_under, scale_groups, weight_spec
from qvision.quant.plan import NodePlan, QuantPlan, QuantSpec
from qvision.targets import Target


def _why_not(node: onnx.NodeProto, kind: str, view: GraphView) -> str | None:
    """Why a node of a quantizable type must still stay float, or None."""
    if kind in WEIGHTED_KINDS:
        lay = layer(node)
        if (
            lay is None
            or len(node.input) <= lay.weight
            or not view.is_constant(node.input[lay.weight])
        ):
            return "weight is not a constant"
        w = view.weight(node.input[lay.weight])
        if kind == "matmul" and w.ndim != 2:
            return "MatMul weight is not 2-D"
        if kind == "gemm" and (
            node_attr(node, "transA", 0)
            or node_attr(node, "alpha", 1.0) != 1.0
            or node_attr(node, "beta", 1.0) != 1.0
        ):
            return "Gemm with transA/alpha/beta is not supported quantized"
        bias = lay.bias_of(node)
        if bias is not None and not view.is_constant(bias):
            return "bias is not a constant"
    if kind in ("binary", "concat") and any(view.is_constant(i) for i in node.input if i):
        return "constant operand"
    acts = KINDS[kind].inputs(node)
    if any(view.elem_type(t) not in (None, onnx.TensorProto.FLOAT) for t in acts if t):
        return "input is not float32"
    return None


def decide_nodes(
    model: onnx.ModelProto, target: Target, keep_float: set[str]
) -> dict[str, NodePlan]:
    view = GraphView(model)
    tail = output_tail(view)
    decisions: dict[str, NodePlan] = {}
    for node in view.topological_order():
        op = node.op_type
        kind = target.ops.get(op)
        if node.name in keep_float:
            decisions[node.name] = NodePlan(
                op_type=op, action="float", reason="kept float by request"
            )
            continue
        if op in target.fold:
            prod = view.producer.get(node.input[0])
            single = len(view.consumers.get(node.input[0], [])) == 1
            folds = (
                prod is not None
                and decisions.get(prod.name)
                and decisions[prod.name].action == "quantize"
            )
            bounds = clip_bounds(node, view) if op == "Clip" else (0.0, np.inf)
            if folds and single and bounds is not None and bounds[0] == 0.0:
                decisions[node.name] = NodePlan(
                    op_type=op, action="fold", reason=f"folded into {prod.name}"
                )
            else:
                decisions[node.name] = NodePlan(
                    op_type=op, action="float", reason="not after a quantized op"
                )
            continue
        if kind is None:
            decisions[node.name] = NodePlan(
                op_type=op, action="float", reason=f"no quantized kernel for {op} on {target.name}"
            )
            continue
        if target.float_tail and node.name in tail:
            decisions[node.name] = NodePlan(
                op_type=op, action="float", kind=kind, reason="post-processing stays float"
            )
            continue
        if kind == "same-scale":
            prod = view.producer.get(node.input[0])
            src_ok = prod is None and node.input[0] in view.inputs
            src_ok = src_ok or (
                prod is not None
                and decisions.get(prod.name) is not None
                and decisions[prod.name].action in ("quantize", "fold")
            )
            if not src_ok:
                decisions[node.name] = NodePlan(
                    op_type=op, action="float", reason="input is not quantized"
                )
                continue
        why = _why_not(node, kind, view)
        if why:
            decisions[node.name] = NodePlan(op_type=op, action="float", kind=kind, reason=why)
        else:
            decisions[node.name] = NodePlan(op_type=op, action="quantize", kind=kind)
    return decisions


PROBABILITIES = ("Softmax", "Sigmoid")
# what a head's post-processing is made of: probabilities, exponentials and data movement;
# arithmetic only with a constant (anchor offsets, stride scales)
POST_OPS = (
    *PROBABILITIES,
    "Exp",
    "Concat",
    "Split",
    "Slice",
    "Gather",
    "Reshape",
    "Transpose",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
)
DECODE_OPS = ("Add", "Sub", "Mul", "Div")


def output_tail(view: GraphView) -> set[str]:
    """Post-processing nodes whose every result reaches only graph outputs, through other
    such nodes: a detector's sigmoid, DFL softmax, box decode and head reshapes and concats.
    A weighted layer belongs to it only when it reads probabilities (YOLOv8's DFL is a fixed
    1x1 Conv over a softmax), so the walk stops at the head's own convolutions; a residual
    Add or a pooling after the last convolution is the network's, not post-processing."""
    outputs = {o.name for o in view.model.graph.output}
    tail: set[str] = set()
    for node in reversed(view.topological_order()):
        if node.op_type in WEIGHTED_OPS:
            src = view.producer.get(node.input[0])
            if src is None or src.op_type not in PROBABILITIES:
                continue
        elif node.op_type in DECODE_OPS:
            if not any(view.is_constant(i) for i in node.input):
                continue
        elif node.op_type not in POST_OPS:
            continue
        readers = [r for t in node.output for r in view.consumers.get(t, [])]
        reaches = any(t in outputs for t in node.output) or bool(readers)
        if reaches and all(r.name in tail for r in readers):
            tail.add(node.name)
    return tail


def activation_tensors(model: onnx.ModelProto, decisions: dict[str, NodePlan]) -> list[str]:
    """Tensors that need a Q/DQ pair: activation inputs of quantized nodes, and outputs of
    quantized nodes read by float ones (see ``quantized_outputs``)."""
    view = GraphView(model)
    out: list[str] = []
    for node in model.graph.node:
        d = decisions.get(node.name)
        if d is None or d.action != "quantize":
            continue
        for t in KINDS[d.kind].inputs(node):
            if t and not view.is_constant(t) and t not in out:
                out.append(t)
    return out + [t for t in quantized_outputs(model, decisions) if t not in out]


def quantized_outputs(model: onnx.ModelProto, decisions: dict[str, NodePlan]) -> list[str]:
    """Outputs of quantized nodes (after any folded Relu/Clip) that float nodes read.

    ONNX Runtime fuses DQ -> op -> Q into an integer kernel only when the op's output is
    quantized; without a Q there (a quantized Conv feeding a float HardSwish) the Conv
    runs in float on dequantized weights, slower than the float model. So such outputs
    get a Q/DQ pair too, and the float readers read its DQ. Graph outputs stay exact.
    Add/Mul and MatMul are left alone: their float versions cost about as much as the
    integer ones plus a Q, and PP-OCR's recognizer lost half its exactly-read lines when
    residual sums feeding LayerNorm were rounded to 8 bits."""
    view = GraphView(model)
    graph_outputs = {o.name for o in model.graph.output}
    out = []
    for node in model.graph.node:
        d = decisions.get(node.name)
        if (
            d is None
            or d.action != "quantize"
            or not (d.kind in KINDS and KINDS[d.kind].quantized_output)
        ):
            continue
        t = node.output[0]
        readers = view.consumers.get(t, [])
        while len(readers) == 1 and decisions[readers[0].name].action == "fold":
            t = readers[0].output[0]
            readers = view.consumers.get(t, [])
        floats = [r for r in readers if decisions[r.name].action == "float"]
        if (
            floats
            and t not in graph_outputs
            and view.elem_type(t) in (None, onnx.TensorProto.FLOAT)
        ):
            out.append(t)
    return out


def build_plan(
    model: onnx.ModelProto,
    ranges: dict[str, tuple[float, float]],
    target: Target,
    method: str,
    model_sha256: str,
    decisions: dict[str, NodePlan],
    weight_bits: int | None = None,
    layer_bits: dict[str, int] | None = None,
    weight_dtype: str | None = None,
    act_bits: int | None = None,
) -> QuantPlan:
    """Scales for every activation and weight, given calibrated ``ranges``.

    ``weight_bits`` caps every weight grid (4: INT4 values carried in INT8 tensors, which
    every INT8 runtime executes); ``layer_bits`` sets single layers' weight bits (mixed
    precision), above or below that cap; ``weight_dtype`` ("int4") stores weights of at
    most 4 bits in true 4-bit tensors. ``act_bits`` (4) caps activation grids; they are
    stored as 4-bit tensors, the only ones ONNX Runtime saturates at 4 bits.
    """
    view = GraphView(model)
    # new data only: the caller's decisions and ranges stay as they were given
    decisions = {name: d.model_copy() for name, d in decisions.items()}
    ranges = {**ranges, **_bounded_outputs(model, ranges)}
    _float_mixed_concats(model, decisions, ranges)  # before the plan copies the decisions
    act_fmt = target.activation.q()
    tensors = activation_tensors(model, decisions)

    groups = scale_groups(model, decisions)
    members: dict[str, list[str]] = defaultdict(list)
    for t in dict.fromkeys([*tensors, *groups.parent]):  # a set would order by hash
        members[groups.find(t)].append(t)

    caps = clip_caps(model, decisions, view)

    missing = [t for t in tensors if all(m not in ranges for m in members[groups.find(t)])]
    if missing:
        # before the plan takes the decisions (it holds its own copy of the mapping)
        _demote_consumers(model, decisions, set(missing))
        tensors = [t for t in tensors if t not in missing]
    plan = QuantPlan(
        model_sha256=model_sha256,
        target=target.name,
        method=method,
        nodes=decisions,
        weights_dtype=weight_dtype or ("int4" if weight_bits == 4 else "int8"),
    )
    if missing:
        plan.warnings.append(
            f"{len(missing)} tensor(s) had no calibration range; their consumers stay float"
        )

    weighted = [
        n
        for n in view.topological_order()
        if (d := decisions.get(n.name)) and d.action == "quantize" and d.kind in WEIGHTED_KINDS
    ]
    low_fmt, edge_inputs = (low_bit(act_fmt, act_bits) if weighted else act_fmt), set()
    if low_fmt is not act_fmt:
        # the first layer's pixels and the last layer's features keep 8 bits, as published
        # W4A4 results (QDrop, PD-Quant) do
        edge_inputs = {
            t for n in (weighted[0], weighted[-1]) for t in KINDS[decisions[n.name].kind].inputs(n)
        }
    for t in tensors:
        group = members[groups.find(t)]
        # a tied group (MaxPool, Reshape, Concat) keeps 8 bits: ONNX Runtime's optimizer
        # runs those ops on the integer tensor, which it allows for 8-bit types only
        tied = len(group) > 1
        fmt = act_fmt if tied or any(m in edge_inputs for m in group) else low_fmt
        known = [ranges[m] for m in group if m in ranges]
        lo, hi = min(r[0] for r in known), max(r[1] for r in known)
        cap = min((caps[m] for m in group if m in caps), default=np.inf)
        hi = min(hi, cap)
        scale, zp = qparams(lo, hi, fmt)
        if np.isfinite(cap):
            scale = fit_under(scale, zp, fmt, cap)
        spec = QuantSpec.from_arrays(fmt, scale, zp)
        for m in group:
            if m in tensors or m in ranges:
                plan.activations[m] = spec
        plan.ranges[t] = (float(lo), float(hi))
    # same-scale outputs only need a spec when something quantized consumes them
    needed = set(tensors)
    plan.activations = {k: v for k, v in plan.activations.items() if k in needed}

    if low_fmt is not act_fmt:
        plan.warnings.append(
            f"{act_bits}-bit activations are stored as {low_fmt.dtype.upper()} (opset 21): "
            "ONNX Runtime has no fused kernel for them and computes those layers in float "
            "between quantize and dequantize, slower than FP32; the model measures the "
            "accuracy of 4-bit activations, not their speed. The first and last layers' "
            "inputs and tensors tied through MaxPool, Reshape or Concat keep 8 bits"
        )
    # Capped (4-bit) weights: the first layer (raw pixels, few weights) and the last (the
    # logits) keep the target's bits, as AdaRound, BRECQ and QDrop report W4 results.
    edges = {weighted[0].name, weighted[-1].name} if weight_bits and weighted else set()
    edges -= set(layer_bits or {})
    for node in weighted:
        d = decisions[node.name]
        lay = layer(node)
        wname = node.input[lay.weight]
        if wname in plan.weights:
            continue
        w = view.weight(wname)
        axis = lay.out_axis if target.per_channel else None
        cap = None if node.name in edges else weight_bits
        fmt = target.weight_format(d.kind, is_depthwise(node, view), cap)
        if layer_bits and node.name in layer_bits:
            bits = layer_bits[node.name]
            fmt = QFormat(fmt.dtype, bits, fmt.symmetric, target.narrow(bits))
        if weight_dtype and fmt.bits <= 4:
            fmt = QFormat(weight_dtype, fmt.bits, fmt.symmetric, fmt.narrow)
        plan.weights[wname] = weight_spec(w, fmt, axis)
    if edges:
        # generated names ('node_Conv_881') with what they are ('Conv #1 3×3 3→32')
        labels, ops = layer_labels(model), {n.name: n.op_type for n in weighted}
        named = ", ".join(
            f"{n} = {labels[n]}" if is_generated(n, ops.get(n, "")) and n in labels else n
            for n in sorted(edges)
        )
        plan.warnings.append(
            f"first and last weighted layers ({named}) keep the target's "
            f"weight bits, as published W{weight_bits} results do; "
            f"--layer-bits NAME={weight_bits} caps them too"
        )
    floats = sorted(
        {
            d.op_type
            for d in decisions.values()
            if d.reason and d.reason.startswith("no quantized kernel")
        }
    )
    if floats:
        plan.warnings.append(
            f"left in float (no quantized kernel on {target.name}): {', '.join(floats)}"
        )
    return plan


# Ops whose output range is known: their grid spans it whatever calibration saw, so a
# detector's rare confident scores (or near-zero ones) are not clipped by averaged ranges.
BOUNDED_OUTPUTS = {"Sigmoid": (0.0, 1.0), "HardSigmoid": (0.0, 1.0), "Softmax": (0.0, 1.0)}


def _bounded_outputs(
    model: onnx.ModelProto, ranges: dict[str, tuple[float, float]]
) -> dict[str, tuple[float, float]]:
    return {
        n.output[0]: BOUNDED_OUTPUTS[n.op_type]
        for n in model.graph.node
        if n.op_type in BOUNDED_OUTPUTS and n.output[0] in ranges
    }


def bounded_inputs(model: onnx.ModelProto) -> set[str]:
    """Inputs of the bounded ops: their full calibrated range is kept (plain min/max),
    since clipping the low end of a detector's score logits turns unlikely boxes into
    confident ones (measured: a 0.28 score read back as 0.67 under averaged ranges)."""
    return {n.input[0] for n in model.graph.node if n.op_type in BOUNDED_OUTPUTS}


# A Concat shares one scale across its inputs; past this spread of input ranges the
# narrowest input loses more than 4 of its 8 bits (a YOLO head joining boxes in pixels with
# 0-1 class scores would keep ~3 score levels), so the Concat stays float.
CONCAT_SPREAD = 16.0


def _float_mixed_concats(
    model: onnx.ModelProto, decisions: dict[str, NodePlan], ranges: dict[str, tuple[float, float]]
) -> None:
    for node in model.graph.node:
        d = decisions.get(node.name)
        if not d or d.action != "quantize" or d.kind != "concat":
            continue
        widths = [ranges[t][1] - ranges[t][0] for t in node.input if t in ranges]
        if len(widths) < 2 or min(widths) <= 0:
            continue
        spread = max(widths) / min(widths)
        if spread > CONCAT_SPREAD:
            decisions[node.name] = NodePlan(
                op_type=node.op_type,
                action="float",
                kind="concat",
                reason=f"input ranges differ {spread:.0f}x; one shared scale would erase the narrow ones",
            )


def _demote_consumers(
    model: onnx.ModelProto, decisions: dict[str, NodePlan], tensors: set[str]
) -> None:
    for node in model.graph.node:
        if any(i in tensors for i in node.input) and decisions[node.name].action == "quantize":
            decisions[node.name] = NodePlan(
                op_type=node.op_type, action="float", reason="input has no calibration range"
            )
