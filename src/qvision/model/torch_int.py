"""ONNX Runtime's integer arithmetic for the units its CPU provider fuses, in PyTorch.

A QDQ graph run op by op in float (``torch_graph``) rounds where ONNX Runtime's fused
kernels round differently: QLinearConv sums integers exactly and requantizes with one
float32 multiplier, x_scale · w_scale / y_scale; QLinearAdd multiplies by scale ratios with
fused multiply-adds (its x86 AVX2 kernel); QLinearGlobalAveragePool sums integers and
multiplies by x_scale / (y_scale · pixels). A value a hair from a rounding boundary then
lands one step apart, and over ~50 layers such one-offs grow to several output steps
(MobileNetV2 at 4-bit weights). ``exact`` reproduces those kernels' arithmetic for the
fused Conv, Add and GlobalAveragePool units (checked against ONNX Runtime 1.32 on x86;
tests/test_torch_int.py), so the simulation is the exported model, not an approximation of
it. Other ops stay float, as ONNX Runtime runs them between DequantizeLinear and
QuantizeLinear.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from qvision.model.graph import GraphView, clip_bounds
from qvision.qmath import int_limits

CORES = ("Conv", "Add", "GlobalAveragePool")
_EPS = float(np.finfo(np.float32).eps)  # ONNX Runtime's tolerance for a redundant Clip


@dataclass
class Unit:
    """A QuantizeLinear and the op it is fused with, whose inputs are DequantizeLinear."""

    q: onnx.NodeProto
    core: onnx.NodeProto
    dqs: list  # the DequantizeLinear feeding each input of ``core`` (None: absent input)
    limits: tuple[int, int]  # the output type's range


def find_units(model: onnx.ModelProto) -> dict[str, Unit]:
    """Output tensor of each fusable QuantizeLinear -> its unit."""
    view = GraphView(model)
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    units = {}
    for q in model.graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in consts or len(q.input) < 3:
            continue
        if q.input[1] not in consts or q.input[2] not in consts:
            continue
        scale, zp = np.float32(consts[q.input[1]]), consts[q.input[2]]
        limits = int_limits(zp.dtype)
        z = int(zp.astype(np.int64))
        # the grid's ends in float32, as ONNX Runtime's Clip/Q fusion computes them
        lo, hi = float(np.float32(limits[0] - z) * scale), float(np.float32(limits[1] - z) * scale)
        core, t = view.producer.get(q.input[0]), q.input[0]
        while core is not None and core.op_type in ("Relu", "Clip"):
            # ONNX Runtime drops a Relu/Clip the output grid already enforces; else no fusion
            bounds = (0.0, np.inf) if core.op_type == "Relu" else clip_bounds(core, view)
            if bounds is None or bounds[0] - lo > _EPS or hi - bounds[1] > _EPS:
                core = None
                break
            if len(view.consumers.get(t, [])) != 1:
                core = None
                break
            t = core.input[0]
            core = view.producer.get(t)
        if core is None or core.op_type not in CORES or len(view.consumers.get(t, [])) != 1:
            continue
        dqs = [view.producer.get(i) if i else None for i in core.input]
        if any(d is None or d.op_type != "DequantizeLinear" for d in dqs):
            continue
        # ONNX Runtime fuses 8-bit units only; 4-bit ones run in float between Q and DQ
        zps = [consts.get(d.input[2]) if len(d.input) > 2 else None for d in dqs[:2]] + [zp]
        if any(z is None or z.dtype not in (np.uint8, np.int8) for z in zps):
            continue
        if core.op_type == "Conv" and len(dqs) > 2 and dqs[2].input[0] not in consts:
            continue
        units[q.output[0]] = Unit(q, core, dqs, limits)
    return units


def _parts(env: dict, dq) -> tuple:
    """A DequantizeLinear's integers (with zero point), scale and zero point."""
    zp = env[dq.input[2]] if len(dq.input) > 2 and dq.input[2] else None
    return env[dq.input[0]], env[dq.input[1]].float(), zp


def _f64(z):
    """A zero point as float64 (0 where absent)."""
    return 0.0 if z is None else z.double()


def _requantize(torch, v, zp, limits: tuple[int, int]):
    """MlasRequantizeOutput: clamp in float, round half to even, add the zero point."""
    z = zp.float().reshape(())
    return torch.round(torch.clamp(v, limits[0] - z, limits[1] - z)) + z


def exact(graph, unit: Unit, env: dict, attrs: dict):
    """The unit's QuantizeLinear output (integers, as float) as ONNX Runtime computes it;
    None where the shapes fall outside what is mirrored (broadcast Add)."""
    torch = graph.torch
    sy, zy = env[unit.q.input[1]].float(), env[unit.q.input[2]]
    kind = unit.core.op_type
    with torch.no_grad():
        if kind == "Conv":
            x, sx, zx = _parts(env, unit.dqs[0])
            w, sw, zw = _parts(env, unit.dqs[1])
            wz = 0.0 if zw is None else graph._shape(zw.double(), w, 0)
            acc = graph.op_Conv(unit.core, attrs, x.double() - _f64(zx), w.double() - wz)
            if len(unit.dqs) > 2:
                acc = acc + graph._shape(env[unit.dqs[2].input[0]].double(), acc, 1)
            m = (sx.reshape(()) * sw) / sy.reshape(())  # float32, in ONNX Runtime's order
            v = acc.float() * graph._shape(m, acc, 1)
        elif kind == "GlobalAveragePool":
            x, sx, zx = _parts(env, unit.dqs[0])
            n = int(np.prod(x.shape[2:]))
            acc = (x.double() - _f64(zx)).sum(dim=(2, 3), keepdim=True)
            v = acc.float() * (sx / (sy * torch.tensor(float(n))))
        else:  # Add: QLinearAdd's AVX2 kernel, fma(a, ra, fma(b, rb, c0)) in float32
            a, sa, za = _parts(env, unit.dqs[0])
            b, sb, zb = _parts(env, unit.dqs[1])
            if a.shape != b.shape:
                return None
            ra, rb = (sa / sy).double(), (sb / sy).double()
            c0 = (
                zy.double() - (ra * _f64(za) + (rb * _f64(zb)).float().double()).float().double()
            ).float()
            t = (b.double() * rb + c0.double()).float()
            t = (a.double() * ra + t.double()).float()
            lo, hi = unit.limits
            return torch.clamp(torch.round(t), lo, hi)
        return _requantize(torch, v, zy, unit.limits)
