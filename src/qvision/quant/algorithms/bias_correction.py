"""Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization", sec. 4.2).

Quantizing W to W_q shifts each output's mean by (W_q - W)·E[x]. With E[x] per input
channel measured on the calibration images, subtracting that shift from the bias
removes the systematic error; the writer then quantizes the corrected bias as usual.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import numpy_helper

from qvision.model.graph import GraphView
from qvision.model.ops import WEIGHTED_KINDS, layer
from qvision.qmath import dequantize
from qvision.quant.algorithms import base
from qvision.quant.algorithms.base import Change
from qvision.quant.algorithms.context import Context
from qvision.quant.calibrate.observers import ChannelMeanObserver


def _shift(node, dw: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    """(W_q - W)·E[x] per output channel; E[x] per input channel, each group's own."""
    lay = layer(node)
    moved = np.moveaxis(dw, (lay.out_axis, lay.in_axis), (0, 1))  # [out, in per group, k...]
    per = moved.reshape(moved.shape[0], moved.shape[1], -1).sum(axis=2)
    cout, cin_g = per.shape
    if mean.size != cin_g * lay.groups or cout % lay.groups:
        return None
    group_of = np.arange(cout) // (cout // lay.groups)
    return np.einsum("oc,oc->o", per, mean.reshape(lay.groups, cin_g)[group_of])


def _weight_error(ctx: Context, view: GraphView, node) -> np.ndarray:
    """W_q - W as the writer will emit W_q (nearest or learned rounding)."""
    name = node.input[layer(node).weight]
    w = view.weight(name)
    spec = ctx.plan.weights[name]
    s, z = spec.arrays()
    wq = dequantize(ctx.plan.quantized_weight(name, w), s, z, spec.axis)
    return wq.astype(np.float64) - w


def _set_bias(ctx: Context, node, inits: dict, shift: np.ndarray) -> None:
    # The corrected float bias lives in the plan, so `--plan` reproduces it without data.
    name = layer(node).bias_of(node)
    bias = numpy_helper.to_array(inits[name]) if name in inits else np.zeros(shift.shape)
    ctx.plan.biases[node.name] = [float(v) for v in (bias - shift).astype(np.float32)]


class Options(base.Options):
    pass  # none


def _candidates(model, nodes: dict) -> list:
    """Quantized weighted layers with a bias input (MatMul has none to correct)."""
    return [
        n
        for n in model.graph.node
        if (d := nodes.get(n.name)) is not None
        and d.action == "quantize"
        and d.kind in WEIGHTED_KINDS
        and layer(n).bias is not None
    ]


def statistics(model, nodes: dict) -> dict:
    """Statistic points: E[x] per channel of each candidate layer's input, on the float model."""
    return {n.input[0]: _channel_mean for n in _candidates(model, nodes)}


def _channel_mean() -> ChannelMeanObserver:
    return ChannelMeanObserver(axis=1)


def apply(ctx: Context, options: Options) -> Change:
    view = GraphView(ctx.model)
    nodes = [
        n
        for n in _candidates(ctx.model, ctx.plan.nodes)
        if n.input[layer(n).weight] in ctx.plan.weights
    ]
    means = ctx.statistics("bias-correction", {n.input[0]: _channel_mean for n in nodes})
    inits = {t.name: t for t in ctx.model.graph.initializer}
    corrected = 0
    total_shift = 0.0
    for node in nodes:
        shift = _shift(node, _weight_error(ctx, view, node), means[node.input[0]].mean())
        if shift is None:
            continue
        _set_bias(ctx, node, inits, shift)
        corrected += 1
        total_shift += float(np.abs(shift).mean())
    mean_shift = total_shift / max(corrected, 1)
    return Change(
        "biases",
        corrected,
        f"bias-correction: corrected {corrected} biases (mean |shift| {mean_shift:.2e})",
        of=len(nodes),
        details={"mean_abs_shift": mean_shift, "images": len(ctx.dataset)},
    )


def _phi(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)


def _cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))


def _relu_mean(mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """E[max(y, 0)] for y ~ N(mu, sd^2), per channel."""
    sd = np.maximum(sd, 1e-12)
    return mu * _cdf(mu / sd) + sd * _phi(mu / sd)


def expected_input(
    mu: np.ndarray, sd: np.ndarray, lo: float | None, hi: float | None
) -> np.ndarray:
    """E[clip(y, lo, hi)] for y ~ N(mu, sd^2); lo None: no activation (identity)."""
    if lo is None:
        return mu
    mean = _relu_mean(mu - lo, sd) + lo
    if hi is not None and np.isfinite(hi):
        mean = mean - _relu_mean(mu - hi, sd)
    return mean


def apply_analytical(ctx: Context, options: Options) -> Change:
    """Data-free bias correction: E[x] from the BatchNorm statistics of the layer before,
    assuming its pre-activations are Gaussian (DFQ sec. 4.2.2)."""
    from qvision.quant.algorithms.cle import relu_clip_max

    view = GraphView(ctx.model)
    inits = {t.name: t for t in ctx.model.graph.initializer}
    corrected = missing = 0
    for node in ctx.model.graph.node:
        d = ctx.plan.nodes.get(node.name)
        if not d or d.action != "quantize" or d.kind not in ("conv", "gemm"):
            continue
        if node.input[layer(node).weight] not in ctx.plan.weights:
            continue
        src, lo, hi = node.input[0], None, None
        act = view.producer.get(src)
        if act is not None and act.op_type in ("Relu", "Clip"):
            hi = np.inf if act.op_type == "Relu" else relu_clip_max(act, view)
            lo = 0.0 if hi is not None else None
            src = act.input[0] if hi is not None else src
        if src not in ctx.bn_stats:
            missing += 1
            continue
        mu, sd = (s.astype(np.float64) for s in ctx.bn_stats[src])
        shift = _shift(node, _weight_error(ctx, view, node), expected_input(mu, sd, lo, hi))
        if shift is None:
            missing += 1
            continue
        _set_bias(ctx, node, inits, shift)
        corrected += 1
    return Change(
        "biases",
        corrected,
        f"bias-correction-analytical: corrected {corrected} biases from BatchNorm statistics; "
        f"{missing} layers have no BatchNorm before them",
        of=corrected + missing,
        details={"no_batchnorm": missing},
    )
