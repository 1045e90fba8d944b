"""QuantPlan: what to quantize and how, as plain data that round-trips through JSON.

The planner writes it from calibration statistics and a target profile; algorithms may
refine it; the writer turns it into a QDQ model. A user can edit the JSON in between
(`--plan-out`, then `--plan`), e.g. to keep a layer in float.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from qvision.errors import QVisionError
from qvision.fileio import write_text_atomic
from qvision.qmath import QFormat, quantize

PLAN_VERSION = 1


class QuantSpec(BaseModel):
    """How one tensor is quantized: a grid (dtype, bits, symmetric) and its parameters.

    ``axis`` is None for per-tensor specs; per-channel specs list one scale and zero
    point per channel along ``axis``.
    """

    dtype: Literal["int8", "uint8", "int16", "uint16", "int4", "uint4"]
    bits: int
    symmetric: bool
    narrow: bool = False
    axis: int | None = None
    scale: list[float]
    zero_point: list[int]

    @property
    def format(self) -> QFormat:
        return QFormat(self.dtype, self.bits, self.symmetric, self.narrow)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        s = np.asarray(self.scale, dtype=np.float32)
        z = np.asarray(self.zero_point, dtype=np.int64)
        return (s.reshape(()), z.reshape(())) if self.axis is None else (s, z)

    @classmethod
    def from_arrays(
        cls, fmt: QFormat, scale: np.ndarray, zero_point: np.ndarray, axis: int | None = None
    ) -> QuantSpec:
        return cls(
            dtype=fmt.dtype,
            bits=fmt.bits,
            symmetric=fmt.symmetric,
            narrow=fmt.narrow,
            axis=axis,
            scale=[float(v) for v in np.atleast_1d(scale)],
            zero_point=[int(v) for v in np.atleast_1d(zero_point)],
        )


class NodePlan(BaseModel):
    """A node's decision: run quantized (which handler) or stay float, and why."""

    op_type: str
    action: Literal[
        "quantize", "float", "fold"
    ]  # fold: Relu/Clip absorbed into the producer's output range
    kind: str | None = (
        None  # handler kind: conv, gemm, matmul, binary, concat, pool, same-scale, unary
    )
    reason: str | None = None
    # readable name for a person editing the plan ('Conv #12 3×3 32→64' where the node name
    # was generated; qvision.model.names); informational: never read back
    label: str | None = None


class QuantPlan(BaseModel):
    version: int = PLAN_VERSION
    model_sha256: str
    target: str
    method: str
    weights_dtype: str = "int8"
    activations: dict[str, QuantSpec] = Field(
        default_factory=dict
    )  # tensor -> one Q/DQ after its producer
    weights: dict[str, QuantSpec] = Field(default_factory=dict)  # initializer -> quantized weight
    nodes: dict[str, NodePlan] = Field(default_factory=dict)  # node name -> decision
    # node name -> float bias replacing the model's (set by bias correction); quantized to int32 by the writer
    biases: dict[str, list[float]] = Field(default_factory=dict)
    # weight -> base64 of packed bits: 1 where the weight rounds up instead of to nearest's
    # floor, as learned by AdaRound. Absent: round to nearest.
    weight_rounding: dict[str, str] = Field(default_factory=dict)
    # weight -> per-channel scale the rounding above was taken on (floor(w / grid)), where
    # block reconstruction then learned a different dequantization scale (the spec's).
    weight_grid: dict[str, list[float]] = Field(default_factory=dict)
    # weight -> base64 of zlib-packed int8: the integer weight minus nearest rounding of the
    # float weight on the spec's grid, where training (QAT) moved weights by whole steps.
    # Overrides weight_rounding.
    weight_offsets: dict[str, str] = Field(default_factory=dict)
    algorithms: list[str] = Field(default_factory=list)  # applied, in order
    ranges: dict[str, tuple[float, float]] = Field(
        default_factory=dict
    )  # calibrated [lo, hi], for reference
    warnings: list[str] = Field(default_factory=list)

    def save(self, path: str | Path) -> Path:
        write_text_atomic(path, self.model_dump_json(indent=1) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> QuantPlan:
        path = Path(path)
        if not path.is_file():
            raise QVisionError("plan file not found", path)
        try:
            plan = cls.model_validate_json(path.read_text(encoding="utf-8"))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise QVisionError(f"invalid plan at '{loc}': {err['msg']}", path) from None
        if plan.version != PLAN_VERSION:
            raise QVisionError(
                f"plan version {plan.version} is not supported (expected {PLAN_VERSION})", path
            )
        return plan

    def quantized_weight(self, name: str, w: np.ndarray) -> np.ndarray:
        """Integer weight as the writer emits it: nearest rounding, or AdaRound's choice."""
        spec = self.weights[name]
        scale, zp = spec.arrays()
        if name in self.weight_offsets:
            q = quantize(w, scale, zp, spec.format, spec.axis).astype(np.int64)
            q += unpack_offsets(self.weight_offsets[name], w.shape)
            return np.clip(q, spec.format.qmin, spec.format.qmax).astype(spec.format.np_dtype)
        if name not in self.weight_rounding:
            return quantize(w, scale, zp, spec.format, spec.axis)
        if name in self.weight_grid:
            scale = np.asarray(self.weight_grid[name], np.float32).reshape(scale.shape)
        s = scale if spec.axis is None else _along(scale, w.ndim, spec.axis)
        z = zp if spec.axis is None else _along(zp, w.ndim, spec.axis)
        up = unpack_bits(self.weight_rounding[name], w.shape)
        q = np.floor(w.astype(np.float32) / s).astype(np.int64) + up + z
        return np.clip(q, spec.format.qmin, spec.format.qmax).astype(spec.format.np_dtype)

    def quantized_nodes(self) -> list[str]:
        return [n for n, d in self.nodes.items() if d.action == "quantize"]


def _along(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = v.size
    return v.reshape(shape)


def pack_bits(bits: np.ndarray) -> str:
    import base64

    return base64.b64encode(np.packbits(bits.astype(np.uint8).ravel()).tobytes()).decode("ascii")


def unpack_bits(text: str, shape: tuple[int, ...]) -> np.ndarray:
    import base64

    n = int(np.prod(shape))
    raw = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    return np.unpackbits(raw)[:n].reshape(shape).astype(np.int64)


def pack_offsets(offsets: np.ndarray) -> str:
    """Small integers (whole grid steps) as base64 of zlib-compressed int8: mostly zeros."""
    import base64
    import zlib

    if offsets.size and np.abs(offsets).max() > 127:
        raise ValueError("weight offsets beyond int8")
    return base64.b64encode(zlib.compress(offsets.astype(np.int8).tobytes(), 9)).decode("ascii")


def unpack_offsets(text: str, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of ``pack_offsets``; a ValueError when the text does not fit ``shape``."""
    import base64
    import binascii
    import zlib

    n = int(np.prod(shape))
    try:
        packed = base64.b64decode(text.encode("ascii"), validate=True)
        raw = zlib.decompressobj().decompress(packed, n + 1)  # no more than it can hold
    except (binascii.Error, zlib.error, UnicodeEncodeError) as exc:
        raise ValueError(f"not packed offsets ({exc})") from None
    if len(raw) != n:
        raise ValueError(f"{len(raw)} offsets for {n} weights")
    return np.frombuffer(raw, dtype=np.int8).reshape(shape).astype(np.int64)
