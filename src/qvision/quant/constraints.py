"""Constraints every grid of a plan obeys, in one place: tensors that must share one scale
(same-scale ops, Concat), the cap a folded Clip puts on the grid after it (rounded in
float32, so ONNX Runtime can fuse the clip), and per-channel min/max weight grids. The
planner builds plans with them; algorithms that move grids keep to them."""

from __future__ import annotations

import numpy as np
import onnx

from qvision.model.graph import GraphView, clip_bounds
from qvision.qmath import QFormat, qparams, weight_ranges
from qvision.quant.plan import NodePlan, QuantSpec


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
