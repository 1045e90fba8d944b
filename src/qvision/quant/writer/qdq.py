"""Write a QuantPlan as QuantizeLinear/DequantizeLinear pairs in the float graph.

- Each activation with a spec gets one Q -> DQ after its producer; the consumers the plan
  quantizes read the DQ output; float consumers do too when the producer is quantized
  (its output is integer in the runtime), else they keep the float tensor. A float Conv or
  Gemm reads a DQ of its own, per channel, so ONNX Runtime does not quantize it anyway.
- Each quantized weight becomes an integer initializer with a (per-channel) DQ.
- Each bias of a quantized Conv/Gemm becomes int32 with scale = input scale x weight scale.
The writer decides nothing: every number comes from the plan, through qvision.qmath.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qvision.errors import QVisionError
from qvision.model.graph import GraphView
from qvision.model.ops import WEIGHTED_KINDS, layer
from qvision.qmath import quantize_bias
from qvision.quant.plan import QuantPlan, QuantSpec
from qvision.quant.writer import four_bit
from qvision.targets import QUANT_METADATA_KEY
from qvision.targets.profiles import TARGETS

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")

_ONNX_TYPES = {
    "int8": TensorProto.INT8,
    "uint8": TensorProto.UINT8,
    "int16": TensorProto.INT16,
    "uint16": TensorProto.UINT16,
    "int4": TensorProto.INT4,
    "uint4": TensorProto.UINT4,
}
FLOAT_LAYERS = ("Conv", "ConvTranspose", "Gemm")  # what ONNX Runtime would quantize itself


def _packed4(values: np.ndarray, onnx_type: int, name: str) -> TensorProto:
    """Two 4-bit values per byte, low nibble first (the ONNX INT4/UINT4 raw layout)."""
    v = (values.astype(np.int64).ravel() & 0xF).astype(np.uint8)
    if v.size % 2:
        v = np.append(v, np.uint8(0))
    raw = (v[0::2] | (v[1::2] << 4)).astype(np.uint8).tobytes()
    return helper.make_tensor(name, onnx_type, list(values.shape), raw, raw=True)


def _zp_tensor(spec: QuantSpec, name: str) -> TensorProto:
    _, zp = spec.arrays()
    return _int_tensor(zp, spec, name)


def _int_tensor(values: np.ndarray, spec: QuantSpec, name: str) -> TensorProto:
    if spec.dtype in ("int4", "uint4"):
        return _packed4(values, _ONNX_TYPES[spec.dtype], name)
    return numpy_helper.from_array(values.astype(spec.format.np_dtype), name)


def _node(
    op: str, inputs: list[str], output: str, name: str, axis: int | None = None
) -> onnx.NodeProto:
    return helper.make_node(
        op, inputs, [output], name=name, **({} if axis is None else {"axis": axis})
    )


def _unique(name: str, taken: set[str]) -> str:
    base, i = name, 1
    while name in taken:
        name = f"{base}_{i}"
        i += 1
    taken.add(name)
    return name


def write_qdq(model: onnx.ModelProto, plan: QuantPlan) -> onnx.ModelProto:
    """A new model with the plan's Q/DQ nodes; the input model is not modified."""
    if any(n.op_type in QDQ_OPS for n in model.graph.node):
        raise QVisionError(
            "model already contains QuantizeLinear/DequantizeLinear nodes; quantize the float model"
        )
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    view = GraphView(out)
    taken = (
        {t.name for t in g.initializer}
        | {o for n in g.node for o in n.output}
        | {i.name for i in g.input}
    )
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[TensorProto] = []
    quantized = {n for n, d in plan.nodes.items() if d.action == "quantize"}

    # Activations: one Q/DQ pair per tensor, read by quantized consumers only.
    dq_of: dict[str, str] = {}
    q_of: dict[str, str] = {}
    specs = four_bit.written_specs(out, plan)
    for tensor, spec in specs.items():
        if spec.axis is not None:
            raise QVisionError(
                f"activation '{tensor}' has a per-channel spec; activations are per-tensor"
            )
        scale, _ = spec.arrays()
        s_name = _unique(f"{tensor}_scale", taken)
        z_name = _unique(f"{tensor}_zero_point", taken)
        q_name, d_name = (
            _unique(f"{tensor}_quantized", taken),
            _unique(f"{tensor}_dequantized", taken),
        )
        new_inits += [
            numpy_helper.from_array(scale.astype(np.float32), s_name),
            _zp_tensor(spec, z_name),
        ]
        new_nodes.append(
            _node("QuantizeLinear", [tensor, s_name, z_name], q_name, _unique(f"{tensor}_Q", taken))
        )
        new_nodes.append(
            _node(
                "DequantizeLinear", [q_name, s_name, z_name], d_name, _unique(f"{tensor}_DQ", taken)
            )
        )
        dq_of[tensor] = d_name
        q_of[tensor] = q_name

    # Weights: integer initializer + DQ (per-channel along the spec's axis).
    wdq_of: dict[str, str] = {}
    for wname, spec in plan.weights.items():
        w = view.weight(wname)
        if w is None:
            raise QVisionError(
                f"plan quantizes weight '{wname}', which is not an initializer of the model"
            )
        scale, zp = spec.arrays()
        q = plan.quantized_weight(wname, w)
        qi, si, zi = (
            _unique(f"{wname}_quantized", taken),
            _unique(f"{wname}_scale", taken),
            _unique(f"{wname}_zero_point", taken),
        )
        new_inits += [
            _int_tensor(q, spec, qi),
            numpy_helper.from_array(scale.astype(np.float32), si),
            _zp_tensor(spec, zi),
        ]
        d_name = _unique(f"{wname}_dequantized", taken)
        new_nodes.append(
            _node(
                "DequantizeLinear", [qi, si, zi], d_name, _unique(f"{wname}_DQ", taken), spec.axis
            )
        )
        wdq_of[wname] = d_name

    # Outputs of integer kernels (quantized or folded producers) exist only dequantized in
    # the runtime, so float readers read the DQ too; that lets ONNX Runtime fuse the producer.
    integer = quantized | {n for n, d in plan.nodes.items() if d.action == "fold"}
    for node in g.node:
        if node.name in quantized:
            continue
        for i, name in enumerate(node.input):
            prod = view.producer.get(name)
            if name in dq_of and prod is not None and prod.name in integer:
                own = _float_layer_dq(node, i, name, plan, view, q_of, taken, new_inits, new_nodes)
                node.input[i] = own or dq_of[name]

    # Rewire quantized nodes; int32 biases need the input and weight scales.
    for node in g.node:
        if node.name not in quantized:
            continue
        kind = plan.nodes[node.name].kind
        x_name = node.input[0]
        for i, name in enumerate(node.input):
            if name in dq_of:
                node.input[i] = dq_of[name]
        if kind in WEIGHTED_KINDS:
            lay = layer(node)
            w_idx = lay.weight
            wname = node.input[w_idx]
            if wname in wdq_of:
                node.input[w_idx] = wdq_of[wname]
            b_idx = lay.bias
            if b_idx is not None and node.name in plan.biases:
                # bias set by the plan (bias correction): a float initializer of its own
                name = _unique(f"{node.name}_bias", taken)
                new_inits.append(
                    numpy_helper.from_array(np.asarray(plan.biases[node.name], np.float32), name)
                )
                view.initializers[name] = new_inits[-1]
                while len(node.input) <= b_idx:
                    node.input.append("")
                node.input[b_idx] = name
            if b_idx is not None and len(node.input) > b_idx and node.input[b_idx]:
                bias = _bias(
                    node,
                    b_idx,
                    plan.activations.get(x_name),
                    plan.weights.get(wname),
                    view,
                    taken,
                    new_inits,
                    new_nodes,
                )
                if bias:
                    node.input[b_idx] = bias

    g.initializer.extend(new_inits)
    nodes = list(g.node) + new_nodes
    del g.node[:]
    g.node.extend(nodes)
    four_bit.drop_folds(out, plan)
    ordered = GraphView(out).topological_order()
    del g.node[:]
    g.node.extend(ordered)
    _drop_unused_initializers(out)
    meta = {
        "target": plan.target,
        "method": plan.method,
        "activations": len(plan.activations),
        "weights": len(plan.weights),
    }
    if any(
        sp.dtype in ("int4", "uint4") for sp in [*plan.weights.values(), *plan.activations.values()]
    ):
        out = _require_opset(out, 21)  # 4-bit QuantizeLinear/DequantizeLinear types
    kept = [p for p in out.metadata_props if p.key != QUANT_METADATA_KEY]
    del out.metadata_props[:]
    out.metadata_props.extend(kept)
    out.metadata_props.add(key=QUANT_METADATA_KEY, value=json.dumps(meta))
    return out


def _channels(node: onnx.NodeProto, view: GraphView) -> tuple[int, int]:
    """(channel axis, channel count) of a Conv/ConvTranspose/Gemm's data input, read from
    its float weight initializer; (0, 0) when the weight is not one."""
    lay = layer(node)
    w = view.weight(node.input[lay.weight]) if lay and len(node.input) > lay.weight else None
    if w is None or w.ndim < 2:
        return 0, 0
    return lay.data_axis, lay.input_channels(w.shape)


def _float_layer_dq(node, i, tensor, plan, view, q_of, taken, new_inits, new_nodes) -> str | None:
    """A DQ of its own for a Conv/Gemm the plan keeps float, its scale repeated per channel.
    ONNX Runtime quantizes a float-weight Conv/Gemm it finds between a per-tensor DQ and a Q
    by itself (WeightBiasQuantization: per-tensor INT8 weights, which the AVX2 u8s8 kernel
    saturates); a per-channel DQ, the same values, is not matched, so the layer runs in
    float as planned. One input channel cannot be told from per-tensor: left as it is. Only
    for targets whose profile asks for it (``Target.float_layer_dq``); a plan naming an
    unknown target gets it, as ONNX Runtime is what qvision evaluates with."""
    target = TARGETS.get(plan.target)
    if i != 0 or node.op_type not in FLOAT_LAYERS or (target and not target.float_layer_dq):
        return None
    axis, count = _channels(node, view)
    spec = plan.activations.get(tensor)
    if count < 2 or spec is None or spec.bits == 4:  # 4-bit: its container may be flipped
        return None
    scale, zp = spec.arrays()
    s_name = _unique(f"{tensor}_{node.name}_scale", taken)
    z_name = _unique(f"{tensor}_{node.name}_zero_point", taken)
    new_inits += [
        numpy_helper.from_array(np.full(count, scale.ravel()[0], np.float32), s_name),
        _int_tensor(np.full(count, zp.ravel()[0]), spec, z_name),
    ]
    d_name = _unique(f"{tensor}_{node.name}_dequantized", taken)
    new_nodes.append(
        _node(
            "DequantizeLinear",
            [q_of[tensor], s_name, z_name],
            d_name,
            _unique(f"{tensor}_{node.name}_DQ", taken),
            axis,
        )
    )
    return d_name


def _bias(node, b_idx, x_spec, w_spec, view, taken, new_inits, new_nodes) -> str | None:
    bname = node.input[b_idx]
    bias = view.weight(bname)
    if bias is None or x_spec is None or w_spec is None or bias.ndim != 1:
        return None
    x_scale, _ = x_spec.arrays()
    w_scale, _ = w_spec.arrays()
    q, s = quantize_bias(bias, float(x_scale), w_scale)
    qi, si, zi = (
        _unique(f"{bname}_{node.name}_quantized", taken),
        _unique(f"{bname}_{node.name}_scale", taken),
        _unique(f"{bname}_{node.name}_zero_point", taken),
    )
    new_inits += [
        numpy_helper.from_array(q.astype(np.int32), qi),
        numpy_helper.from_array(s, si),
        numpy_helper.from_array(np.zeros(s.shape, np.int32), zi),
    ]
    d_name = _unique(f"{bname}_{node.name}_dequantized", taken)
    new_nodes.append(
        _node(
            "DequantizeLinear", [qi, si, zi], d_name, _unique(f"{bname}_{node.name}_DQ", taken), 0
        )
    )
    return d_name


def _require_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """The model at opset >= ``version``. From 20, 21 only widened type lists (4-bit types for
    Q/DQ, Reshape, Transpose...), so the number is raised; older models go through the
    ONNX version converter."""
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if current >= version:
        return model
    if current < 20:
        from onnx import version_converter

        try:
            model = version_converter.convert_version(model, version)
        except Exception as exc:  # the converter raises several types
            raise QVisionError(
                f"true INT4 needs opset {version}; converting from opset {current} failed "
                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); use --weights int4"
            ) from None
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            op.version = version
    model.ir_version = max(model.ir_version, 10)
    return model


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
