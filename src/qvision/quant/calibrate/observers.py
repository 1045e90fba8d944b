"""Observers: streaming statistics of one tensor, turned into a clipping range.

Each keeps a fixed amount of state (a running min/max and, for the histogram methods,
a fixed-size histogram), so calibration memory does not grow with the number of images.
"""

from __future__ import annotations

import copy

import numpy as np

from qvision.qmath import QFormat, fake_quantize, qparams

METHODS = ("minmax", "mean-minmax", "percentile", "entropy", "mse")


class NonFiniteError(ValueError):
    """A tensor held NaN or Inf."""


class MinMaxObserver:
    """Global min/max; also the mean of each batch's min and max ('mean-minmax': with batch 1,
    the per-image extremes averaged, which ignores the rare image with an outlier)."""

    def __init__(self, method: str = "minmax") -> None:
        self.method = method
        self.lo = np.inf
        self.hi = -np.inf
        self.count = 0
        self.batches = 0
        self.sum_lo = self.sum_hi = 0.0

    def update(self, x: np.ndarray) -> None:
        lo, hi = float(x.min()), float(x.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise NonFiniteError("contains NaN or Inf")
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        self.count += x.size
        self.batches += 1
        self.sum_lo += lo
        self.sum_hi += hi

    def range(self, fmt: QFormat | None = None) -> tuple[float, float]:
        if not self.count:
            return (0.0, 0.0)
        if self.method == "mean-minmax":
            return (self.sum_lo / self.batches, self.sum_hi / self.batches)
        return (self.lo, self.hi)

    def serves(self, method: str) -> bool:
        return method in ("minmax", "mean-minmax")

    def for_method(self, method: str) -> MinMaxObserver:
        """The same statistics read with another method (shares any histogram)."""
        other = copy.copy(self)
        other.method = method
        return other


class HistogramObserver(MinMaxObserver):
    """Min/max plus a histogram over [-R, R] whose range doubles when data exceed it.

    Doubling merges bin pairs exactly, so the histogram never needs the old data.
    """

    def __init__(self, bins: int = 4096, method: str = "percentile", percentile: float = 99.999):
        super().__init__(method)
        if bins % 2:
            raise ValueError("bins must be even")
        self.bins = bins
        self.method = method
        self.percentile = percentile
        self.hist = np.zeros(bins, dtype=np.int64)
        self.radius = 0.0

    def update(self, x: np.ndarray) -> None:
        super().update(x)
        amax = max(-self.lo, self.hi)
        if amax <= 0:
            self.hist[self.bins // 2] += x.size
            return
        if self.radius == 0.0:
            self.radius = amax
        while amax > self.radius:
            self._double()
        width = 2 * self.radius / self.bins
        idx = np.floor((x.ravel().astype(np.float32) + np.float32(self.radius)) / np.float32(width))
        idx = np.clip(idx, 0, self.bins - 1).astype(np.int64)
        self.hist += np.bincount(idx, minlength=self.bins)

    def _double(self) -> None:
        merged = self.hist.reshape(-1, 2).sum(axis=1)
        quarter = self.bins // 4
        new = np.zeros_like(self.hist)
        new[quarter : quarter + merged.size] = merged
        self.hist = new
        self.radius *= 2

    def serves(self, method: str) -> bool:
        return method in METHODS

    # -- ranges ----------------------------------------------------------------------
    def _edges(self) -> np.ndarray:
        return np.linspace(-self.radius, self.radius, self.bins + 1)

    def range(self, fmt: QFormat | None = None) -> tuple[float, float]:
        if not self.count or self.radius == 0.0:
            return super().range()
        if self.method == "percentile":
            return self._percentile_range()
        fmt = fmt or QFormat("uint8", 8, symmetric=False)
        if self.method == "entropy":
            return self._entropy_range(fmt)
        if self.method == "mse":
            return self._mse_range(fmt)
        return super().range()  # minmax, mean-minmax

    def _percentile_range(self) -> tuple[float, float]:
        cdf = np.cumsum(self.hist) / self.hist.sum()
        edges = self._edges()
        tail = 1.0 - self.percentile / 100.0
        lo_i = int(np.searchsorted(cdf, tail, side="left"))
        hi_i = int(np.searchsorted(cdf, 1.0 - tail, side="left"))
        lo = max(self.lo, float(edges[lo_i])) if self.lo < 0 else self.lo
        hi = min(self.hi, float(edges[hi_i + 1]))
        return lo, hi

    def _candidates(self) -> np.ndarray:
        # Clip thresholds from 5% to 100% of the observed absolute maximum.
        amax = max(-self.lo, self.hi)
        return amax * np.linspace(0.05, 1.0, 96)

    def _clip_range(self, t: float) -> tuple[float, float]:
        return max(self.lo, -t), min(self.hi, t)

    def _mse_range(self, fmt: QFormat) -> tuple[float, float]:
        """Threshold minimizing expected squared error (clipping + rounding) over the histogram."""
        centers = (self._edges()[:-1] + self._edges()[1:]) / 2
        mask = self.hist > 0
        c, w = centers[mask], self.hist[mask].astype(np.float64)
        best, best_err = None, np.inf
        for t in self._candidates():
            lo, hi = self._clip_range(t)
            s, z = qparams(lo, hi, fmt)
            err = float((w * (fake_quantize(c, s, z, fmt).astype(np.float64) - c) ** 2).sum())
            if err < best_err:
                best, best_err = (lo, hi), err
        return best

    def _entropy_range(self, fmt: QFormat) -> tuple[float, float]:
        """KL-divergence calibration (as in TensorRT) on the magnitude histogram."""
        half = self.bins // 2
        mag = self.hist[half:].astype(np.float64).copy()
        mag[:half] += self.hist[:half][::-1]  # fold negatives onto |x|
        # Zeros (ReLU outputs, padding) are exact on any grid; left in, their spike would be
        # smeared into neighbouring bins by the requantization and bias the search to clip.
        mag[0] = 0.0
        top = int(np.flatnonzero(mag)[-1]) if mag.any() else 0
        if mag[top] >= 1e-3 * mag.sum():
            # A spike at the maximum is a saturating activation (ReLU6, Clip): its values
            # are real and frequent, and KL would happily clip them.
            return self.lo, self.hi
        levels = (fmt.qmax - fmt.qmin + 1) // (
            2 if (self.lo < 0 and not fmt.symmetric) or fmt.signed else 1
        )
        levels = max(levels, 2)
        width = self.radius / half
        best_i, best_kl = half, np.inf
        stop = int(np.ceil(max(-self.lo, self.hi) / width))
        for i in range(max(levels, 16), min(stop, half) + 1, max(1, half // 256)):
            p = mag[:i].copy()
            p[-1] += mag[i:].sum()  # clipped mass lands in the last bin
            q = _requantize(mag[:i], levels)
            kl = _kl(p, q)
            if kl < best_kl:
                best_i, best_kl = i, kl
        return self._clip_range(best_i * width)


def _requantize(p: np.ndarray, levels: int) -> np.ndarray:
    """Spread ``p`` over ``levels`` equal groups, keeping zeros where p had none."""
    idx = np.minimum((np.arange(p.size) * levels) // p.size, levels - 1)
    sums = np.bincount(idx, weights=p, minlength=levels)
    nonzero = np.bincount(idx, weights=(p > 0).astype(np.float64), minlength=levels)
    per = np.divide(sums, nonzero, out=np.zeros_like(sums), where=nonzero > 0)
    return np.where(p > 0, per[idx], 0.0)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p = p / max(p.sum(), 1e-30)
    q = q / max(q.sum(), 1e-30)
    mask = p > 0
    qm = np.where(q[mask] > 0, q[mask], 1e-12)
    return float((p[mask] * np.log(p[mask] / qm)).sum())


class ChannelMeanObserver:
    """Running per-channel mean along ``axis`` (bias correction needs E[x] per input channel)."""

    def __init__(self, axis: int = 1):
        self.axis = axis
        self.total: np.ndarray | None = None
        self.count = 0

    def update(self, x: np.ndarray) -> None:
        axis = self.axis % x.ndim
        s = x.sum(axis=tuple(i for i in range(x.ndim) if i != axis), dtype=np.float64)
        self.total = s if self.total is None else self.total + s
        self.count += x.size // x.shape[axis]

    def mean(self) -> np.ndarray:
        return self.total / max(self.count, 1)


def make_observer(method: str) -> MinMaxObserver:
    if method in ("minmax", "mean-minmax"):
        return MinMaxObserver(method)
    if method in METHODS:
        return HistogramObserver(method=method)
    raise ValueError(f"unknown calibration method '{method}'; available: {', '.join(METHODS)}")


class ChannelPowerObserver(ChannelMeanObserver):
    """Running per-channel mean of x² along ``axis``: how far each channel sits above the
    rounding noise of the tensor's one grid."""

    def update(self, x: np.ndarray) -> None:
        super().update(np.square(x, dtype=np.float64))
