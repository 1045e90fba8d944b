"""MSE-optimal per-channel weight ranges: clip each channel where the squared error
(rounding + clipping) of its fake-quantized weights is smallest, instead of at its max."""

from __future__ import annotations

import numpy as np

from qvision.model.graph import GraphView
from qvision.qmath import QFormat, fake_quantize, qparams, weight_ranges
from qvision.quant.algorithms import base
from qvision.quant.algorithms.base import Change
from qvision.quant.algorithms.context import Context
from qvision.quant.plan import QuantSpec

RATIOS = np.linspace(0.5, 1.0, 51)


def mse_ranges(w: np.ndarray, axis: int | None, fmt: QFormat) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = weight_ranges(w, axis)
    if axis is None:
        moved = w.reshape(1, -1)
        lo, hi = np.atleast_1d(lo), np.atleast_1d(hi)
    else:
        moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    best = np.full(moved.shape[0], np.inf)
    best_r = np.ones(moved.shape[0])
    for r in RATIOS:
        s, z = qparams(lo * r, hi * r, fmt)
        err = ((fake_quantize(moved, s[:, None], z[:, None], fmt) - moved) ** 2).sum(axis=1)
        better = err < best
        best[better], best_r[better] = err[better], r
    lo, hi = lo * best_r, hi * best_r
    return (lo[0], hi[0]) if axis is None else (lo, hi)


class Options(base.Options):  # weight-mse has no settings
    pass


def apply(ctx: Context, options: Options) -> Change:
    view = GraphView(ctx.model)
    changed = 0
    for name, spec in ctx.plan.weights.items():
        w = view.weight(name)
        lo, hi = mse_ranges(w, spec.axis, spec.format)
        scale, zp = qparams(lo, hi, spec.format)
        ctx.plan.weights[name] = QuantSpec.from_arrays(spec.format, scale, zp, spec.axis)
        changed += 1
    return Change(
        "weight grids",
        changed,
        f"weight-mse: MSE-optimal clipping for {changed} weights",
        of=len(ctx.plan.weights),
    )
