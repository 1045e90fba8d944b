"""Constraints every grid of a plan obeys, in one place: tensors that must share one scale
(same-scale ops, Concat), the cap a folded Clip puts on the grid after it (rounded in
float32, so ONNX Runtime can fuse the clip), and per-channel min/max weight grids. The
planner builds plans with them; algorithms that move grids keep to them."""

from __future__ import annotations

import numpy as np
import onnx

from qvision.model.graph import GraphView, clip_bounds
from qvision.model.ops import WEIGHTED_KINDS, layer
from qvision.qmath import QFormat, qparams, weight_ranges
from qvision.quant.plan import NodePlan, QuantPlan, QuantSpec, pack_offsets, unpack_offsets


class ScaleGroups:
    """Union-find over tensor names that must share one scale."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


def scale_groups(model: onnx.ModelProto, decisions: dict[str, NodePlan]) -> ScaleGroups:
    """Tensors that must share a scale: same-scale ops and Concat tie inputs to outputs."""
    groups = ScaleGroups()
    for node in model.graph.node:
        d = decisions.get(node.name)
        if d and d.action == "quantize" and d.kind == "same-scale":
            groups.union(node.output[0], node.input[0])
        if d and d.action == "quantize" and d.kind == "concat":
            for t in node.input:
                groups.union(t, node.output[0])
    return groups


def clip_caps(
    model: onnx.ModelProto, decisions: dict[str, NodePlan], view: GraphView
) -> dict[str, float]:
    """A tensor after a folded Clip must not exceed the clip's max once rounded to the grid."""
    caps: dict[str, float] = {}
    for node in model.graph.node:
        d = decisions.get(node.name)
        if d and d.action == "fold" and node.op_type == "Clip":
            caps[node.output[0]] = clip_bounds(node, view)[1]
    return caps


def weight_spec(w: np.ndarray, fmt: QFormat, axis: int | None) -> QuantSpec:
    """Min/max (per-channel when ``axis`` is set) weight grid on ``fmt``."""
    lo, hi = weight_ranges(w, axis)
    scale, zp = qparams(lo, hi, fmt)
    return QuantSpec.from_arrays(fmt, scale, zp, axis)


def fit_under(scale: np.ndarray, zp: np.ndarray, fmt: QFormat, cap: float) -> np.ndarray:
    """Shrink the scale by ulps until the top of the grid is <= cap (float32 rounding)."""
    s = np.float32(scale)
    while np.float32(s) * np.float32(fmt.qmax - int(zp)) > np.float32(cap):
        s = np.nextafter(s, np.float32(0))
    return np.asarray(s, dtype=np.float32)


# An int32 bias stays below this, leaving the rest of the int32 range to the accumulated
# products (K · 127 · 255 < 2^30 for any K below 33,000)
BIAS_LIMIT = 2**30


def fit_biases(model: onnx.ModelProto, plan: QuantPlan) -> list[str]:
    """Raise the weight step of channels whose bias would not fit int32 on input step ×
    weight step; returns the weights changed.

    ONNX Runtime adds the int32 bias to the accumulator without saturation, so a bias
    clipped to int32 plus the products wraps around: EfficientNet-Lite0's stem has a channel
    with weights near 1e-6 and a bias of -0.5, which then read +0.31 on every pixel instead
    of 0. A step large enough for the bias loses nothing on such weights. Learned rounding
    on a changed channel falls back to nearest (offsets) or to the new step (grid)."""
    view = GraphView(model)
    changed = []
    for node in model.graph.node:
        d = plan.nodes.get(node.name)
        if d is None or d.action != "quantize" or d.kind not in WEIGHTED_KINDS:
            continue
        lay = layer(node)
        wname, x = node.input[lay.weight], node.input[0]
        name = lay.bias_of(node)
        bias = plan.biases.get(node.name)
        if bias is None and name is not None:
            bias = view.weight(name)
        if bias is None or wname not in plan.weights or x not in plan.activations:
            continue
        spec = plan.weights[wname]
        sx = float(plan.activations[x].scale[0])
        need = np.abs(np.asarray(bias, np.float64).ravel()) / (sx * BIAS_LIMIT)
        if spec.axis is None:
            need = np.full(1, need.max())
        old = np.asarray(spec.scale, np.float64)
        low = need > old
        if not low.any():
            continue
        new = np.where(low, need * (1 + 1e-3), old).astype(np.float32)
        plan.weights[wname] = spec.model_copy(update={"scale": [float(v) for v in new]})
        if wname in plan.weight_grid:
            grid = np.asarray(plan.weight_grid[wname], np.float32)
            plan.weight_grid[wname] = [float(v) for v in np.where(low, new, grid)]
        if wname in plan.weight_offsets and spec.axis is None:
            del plan.weight_offsets[wname]
        elif wname in plan.weight_offsets:
            w = view.weight(wname)
            off = unpack_offsets(plan.weight_offsets[wname], w.shape)
            mask = np.zeros(w.shape, bool)
            np.moveaxis(mask, spec.axis, 0)[low] = True
            plan.weight_offsets[wname] = pack_offsets(np.where(mask, 0, off))
        changed.append(wname)
    return changed
