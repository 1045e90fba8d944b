"""Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization", sec. 4.2).

Quantizing W to W_q shifts each output's mean by (W_q - W)·E[x]. With E[x] per input
channel measured on the calibration images, subtracting that shift from the bias
removes the systematic error; the writer then quantizes the corrected bias as usual.
"""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from qvision.algorithms.context import Context
from qvision.calibrate import collect
from qvision.calibrate.observers import ChannelMeanObserver
from qvision.model.graph import GraphView
from qvision.planner import WEIGHT_INPUT, node_attr
from qvision.qmath import dequantize


def _shift(node, kind: str, dw: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    """(W_q - W)·E[x] per output channel."""
    if kind == "conv":
        groups = int(node_attr(node, "group", 1))
        cout, cin_g = dw.shape[:2]
        if mean.size != cin_g * groups:
            return None
        per = dw.reshape(groups, cout // groups, cin_g, -1).sum(axis=3)  # [g, cout/g, cin_g]
        return np.einsum("goc,gc->go", per, mean.reshape(groups, cin_g)).reshape(cout)
    if kind == "gemm":
        return dw @ mean if node_attr(node, "transB", 0) else mean @ dw
    return mean @ dw  # matmul: W is [K, N]


def apply(ctx: Context) -> Context:
    view = GraphView(ctx.model)
    nodes = [
        (n, ctx.plan.nodes[n.name].kind)
        for n in ctx.model.graph.node
        if n.name in ctx.plan.nodes
        and ctx.plan.nodes[n.name].action == "quantize"
        and ctx.plan.nodes[n.name].kind in WEIGHT_INPUT
        and n.input[1] in ctx.plan.weights
        and ctx.plan.nodes[n.name].kind != "matmul"  # MatMul has no bias input to correct
    ]
    inputs = sorted({n.input[0] for n, _ in nodes})
    means, _ = collect(
        ctx.model,
        ctx.dataset,
        ctx.preprocess,
        inputs,
        method=lambda t: ChannelMeanObserver(axis=1),
        input_name=ctx.input_name,
        threads=ctx.threads,
    )
    inits = {t.name: t for t in ctx.model.graph.initializer}
    corrected = 0
    total_shift = 0.0
    for node, kind in nodes:
        w = view.weight(node.input[1])
        spec = ctx.plan.weights[node.input[1]]
        s, z = spec.arrays()
        dw = (
            dequantize(ctx.plan.quantized_weight(node.input[1], w), s, z, spec.axis).astype(
                np.float64
            )
            - w
        )
        shift = _shift(node, kind, dw, means[node.input[0]].mean())
        if shift is None:
            continue
        has_bias = len(node.input) > 2 and node.input[2] and node.input[2] in inits
        bias = (
            numpy_helper.to_array(inits[node.input[2]])
            if has_bias
            else np.zeros(shift.shape, np.float32)
        )
        # The corrected float bias lives in the plan, so `--plan` reproduces it without data.
        ctx.plan.biases[node.name] = [float(v) for v in (bias - shift).astype(np.float32)]
        corrected += 1
        total_shift += float(np.abs(shift).mean())
    ctx.log.append(
        f"bias-correction: corrected {corrected} biases (mean |shift| {total_shift / max(corrected, 1):.2e})"
    )
    return ctx
