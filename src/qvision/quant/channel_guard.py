"""Depthwise convolutions whose one per-tensor input grid crushes many live channels stay
float, with the layer feeding them.

ONNX Runtime's integer convolution takes one input scale per tensor. Where channel ranges
differ a hundredfold (PP-LCNet's HardSwish outputs: 0.3 against 105 in one tensor), the
small channels sit under one grid step and round to noise; a depthwise convolution never
mixes channels, so those channels leave it ruined, and batch-norm folding often scales them
up. Cross-layer equalization would shrink the spread but is exact only through ReLU-like
activations. So the layer is kept float: PicoDet-LCNet's document-layout mAP went from
41 to 54 % on its calibration pages (FP32 54 %) keeping four such layers float.
"""

from __future__ import annotations

import numpy as np
import onnx

from qvision.model.graph import GraphView
from qvision.model.ops import WEIGHTED_OPS, is_depthwise
from qvision.qmath import QFormat
from qvision.quant.calibrate.observers import ChannelPowerObserver
from qvision.quant.plan import NodePlan

POWER = "channel-power"  # the statistic purpose: per-channel E[x²] of depthwise inputs
SNR_DB = 10.0  # a channel this close to the grid's rounding noise is lost
SHARE = 0.1  # ... and a layer losing this share of its live channels is kept float


def points(model: onnx.ModelProto, decisions: dict[str, NodePlan]) -> dict:
    """Input tensors of quantized depthwise convolutions -> per-channel power observers."""
    view = GraphView(model)
    return {
        n.input[0]: ChannelPowerObserver
        for n in model.graph.node
        if decisions.get(n.name) is not None
        and decisions[n.name].action == "quantize"
        and is_depthwise(n, view)
    }


def crushed(
    model: onnx.ModelProto,
    decisions: dict[str, NodePlan],
    ranges: dict[str, tuple[float, float]],
    power: dict,
    fmt: QFormat,
) -> dict[str, str]:
    """Node -> why it stays float: each depthwise layer whose input grid leaves at least
    ``SHARE`` of its live channels under ``SNR_DB``, and the layer producing that input
    (through float or folded activations), whose output grid would crush them first."""
    view = GraphView(model)
    out: dict[str, str] = {}
    for node in model.graph.node:
        t = node.input[0] if node.input else ""
        if t not in power or t not in ranges or not is_depthwise(node, view):
            continue
        lo, hi = min(ranges[t][0], 0.0), max(ranges[t][1], 0.0)
        step = (hi - lo) / (fmt.qmax - fmt.qmin)
        p = power[t].mean()
        live = p > 0  # channels that are always zero lose nothing
        if step <= 0 or not live.any():
            continue
        snr = 10 * np.log10(p[live] / (step**2 / 12))
        share = float((snr < SNR_DB).mean())
        if share < SHARE:
            continue
        why = f"{share:.0%} of its input channels under {SNR_DB:.0f} dB on one grid"
        out[node.name] = why
        prod = view.producer.get(t)
        while prod is not None and prod.op_type not in WEIGHTED_OPS:
            d = decisions.get(prod.name)
            if d is None or d.action == "quantize" or len(prod.input) < 1:
                break
            prod = view.producer.get(prod.input[0])
        if prod is not None and prod.op_type in WEIGHTED_OPS:
            out.setdefault(prod.name, f"feeds {node.name}, whose {why}")
    return out
