"""Quantization arithmetic, written once: formats, scale/zero-point from a range,
quantize, dequantize. Observers, the planner, the writer, algorithms, QAT and tests all
call these, so the numbers the plan promises are the numbers the runtime computes.

Rounding is half-to-even, as ONNX QuantizeLinear specifies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_CONTAINERS = {
    "int8": (np.int8, 8, True),
    "uint8": (np.uint8, 8, False),
    "int16": (np.int16, 16, True),
    "uint16": (np.uint16, 16, False),
    "int4": (np.int8, 4, True),  # numpy has no 4-bit type; values stay in int8 storage
    "uint4": (np.uint8, 4, False),
    "int32": (np.int32, 32, True),
}


@dataclass(frozen=True)
class QFormat:
    """An integer grid: container ``dtype``, ``bits`` actually used, symmetric or not.

    ``bits`` below the container width restricts the range (7-bit weights in int8 keep
    AVX2's u8s8 kernel from saturating). ``narrow`` drops the most negative value so
    the signed grid is symmetric (-127..127).
    """

    dtype: str = "int8"
    bits: int = 8
    symmetric: bool = True
    narrow: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in _CONTAINERS:
            raise ValueError(f"unknown quantized dtype {self.dtype}")
        if not 2 <= self.bits <= _CONTAINERS[self.dtype][1]:
            raise ValueError(f"{self.bits} bits do not fit in {self.dtype}")

    @property
    def signed(self) -> bool:
        return _CONTAINERS[self.dtype][2]

    @property
    def np_dtype(self) -> type:
        return _CONTAINERS[self.dtype][0]

    @property
    def qmin(self) -> int:
        if not self.signed:
            return 0
        return -(2 ** (self.bits - 1)) + (1 if self.narrow else 0)

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1


def qparams(
    rmin: np.ndarray | float, rmax: np.ndarray | float, fmt: QFormat
) -> tuple[np.ndarray, np.ndarray]:
    """Scale (float32) and zero point (int64) covering [rmin, rmax], element-wise.

    The range is widened to include 0 so that zero (padding, ReLU) is exact.
    """
    lo = np.minimum(np.asarray(rmin, dtype=np.float64), 0.0)
    hi = np.maximum(np.asarray(rmax, dtype=np.float64), 0.0)
    qmin, qmax = fmt.qmin, fmt.qmax
    if fmt.symmetric:
        amax = np.maximum(-lo, hi)
        if fmt.signed:
            zp = np.zeros_like(amax)
            # a full signed grid (-8..7) has one more step below zero than above
            scale = _floor(np.maximum(-lo / -qmin, hi / qmax))
        else:  # unsigned symmetric: zero sits in the middle of the grid
            zp = np.full_like(amax, (qmin + qmax + 1) // 2)
            scale = _floor(amax / (qmax - zp))
    else:
        scale = _floor((hi - lo) / (qmax - qmin))
        zp = np.clip(np.rint(qmin - lo / scale), qmin, qmax)
    return scale.astype(np.float32), zp.astype(np.int64)


MIN_SCALE = 1e-12

_FOUR_BIT = {"int4": (-8, 7), "uint4": (0, 15)}
# --acts 4: the 4-bit type that stands for an 8-bit activation type
ACT4 = {"uint8": "uint4", "int8": "int4"}


def low_bit(fmt: QFormat, bits: int | None) -> QFormat:
    """``fmt`` with ``bits`` fewer than its own, in the 4-bit type that holds them (--acts);
    ``fmt`` itself when ``bits`` is None or not fewer."""
    if not bits or bits >= fmt.bits:
        return fmt
    return QFormat(ACT4[fmt.dtype], bits, fmt.symmetric, fmt.narrow)


def int_limits(dtype) -> tuple[int, int]:
    """Smallest and largest value of an integer array type, 4-bit ones included (numpy has
    none of its own: ONNX hands INT4/UINT4 tensors back as ml_dtypes arrays)."""
    name = np.dtype(dtype).name
    if name in _FOUR_BIT:
        return _FOUR_BIT[name]
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _floor(scale: np.ndarray) -> np.ndarray:
    """All-zero or denormal ranges: any small positive scale represents them (0 would be invalid)."""
    return np.where(scale >= MIN_SCALE, scale, MIN_SCALE)


def _broadcast(v: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    v = np.asarray(v)
    if axis is None or v.ndim == 0 or v.size == 1:
        return v.reshape(()) if v.size == 1 else v
    shape = [1] * ndim
    shape[axis] = v.size
    return v.reshape(shape)


def quantize(
    x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, fmt: QFormat, axis: int | None = None
) -> np.ndarray:
    """round_half_even(x / scale) + zero_point, saturated to the format's grid."""
    x = np.asarray(x, dtype=np.float32)
    s = _broadcast(np.asarray(scale, dtype=np.float32), x.ndim, axis)
    z = _broadcast(np.asarray(zero_point, dtype=np.int64), x.ndim, axis)
    q = np.rint(x / s).astype(np.int64) + z
    return np.clip(q, fmt.qmin, fmt.qmax).astype(fmt.np_dtype)


def dequantize(
    q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int | None = None
) -> np.ndarray:
    q = np.asarray(q)
    s = _broadcast(np.asarray(scale, dtype=np.float32), q.ndim, axis)
    z = _broadcast(np.asarray(zero_point, dtype=np.int64), q.ndim, axis)
    return ((q.astype(np.int64) - z).astype(np.float32) * s).astype(np.float32)


def fake_quantize(
    x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, fmt: QFormat, axis: int | None = None
) -> np.ndarray:
    """dequantize(quantize(x)): the float value the quantized model actually sees."""
    return dequantize(quantize(x, scale, zero_point, fmt, axis), scale, zero_point, axis)


BIAS_FORMAT = QFormat("int32", 32, symmetric=True)


def bias_scale(input_scale: float | np.ndarray, weight_scale: np.ndarray) -> np.ndarray:
    """Bias scale for integer accumulation: input scale times (per-channel) weight scale."""
    return (np.float32(input_scale) * np.asarray(weight_scale, dtype=np.float32)).astype(np.float32)


def quantize_bias(
    bias: np.ndarray, input_scale: float, weight_scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """int32 bias and its scale (zero point 0), as QLinearConv/QGemm accumulate it."""
    s = bias_scale(input_scale, weight_scale)
    s = np.where(s > 0, s, np.float32(1e-12)).astype(np.float32)
    s = np.broadcast_to(s, np.shape(bias)).astype(np.float32)
    q = quantize(bias, s, np.zeros(s.shape, np.int64), BIAS_FORMAT, axis=0)
    return q, s


def weight_ranges(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (or per-tensor when axis is None) min and max of a weight."""
    if axis is None:
        return np.asarray(w.min()), np.asarray(w.max())
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    return moved.min(axis=1), moved.max(axis=1)


def sqnr_db(signal: float, noise: float) -> float | None:
    """10·log10(signal / noise) in dB; None when there is no noise."""
    return None if noise == 0 else float(10 * np.log10(max(signal, 1e-30) / noise))


class OutputError:
    """Signal and error energy, and the summed per-input cosine, of outputs against their
    references, accumulated batch by batch."""

    def __init__(self) -> None:
        self.signal = self.noise = self.cos = 0.0
        self.n = 0

    def update(self, ref: np.ndarray, got: np.ndarray) -> None:
        r = ref.reshape(ref.shape[0], -1).astype(np.float64)
        g = got.reshape(got.shape[0], -1).astype(np.float64)
        self.signal += float((r * r).sum())
        self.noise += float(((g - r) ** 2).sum())
        norms = np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)
        self.cos += float(
            np.where(norms > 0, (r * g).sum(axis=1) / np.where(norms > 0, norms, 1), 1).sum()
        )
        self.n += r.shape[0]
