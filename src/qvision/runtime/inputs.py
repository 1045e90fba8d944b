"""Synthetic input feeds for timing a model."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from qvision.errors import QVisionError

_NP = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}


def fill_dims(dims: list[int | None], batch: int, hw: tuple[int, int] | None) -> list:
    """An input's dims with the unknown ones filled: the first is the batch; H and W of a
    4-D input come from ``hw`` (NCHW when axis 1 looks like 1 or 3 channels, else NHWC)."""
    dims = list(dims)
    if dims and dims[0] is None:
        dims[0] = batch
    if len(dims) == 4 and hw is not None:
        h_axis = 2 if dims[1] in (1, 3) else 1
        for axis, size in zip((h_axis, h_axis + 1), hw, strict=True):
            dims[axis] = dims[axis] or size
    return dims


def random_feeds(
    session: ort.InferenceSession, batch: int, hw: tuple[int, int] | None, path: str, seed: int = 0
) -> dict[str, np.ndarray]:
    """Random inputs: the first dynamic dim is the batch, dynamic H/W of a 4-D input come from ``hw``."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in session.get_inputs():
        dims = fill_dims(
            [d if isinstance(d, int) and d > 0 else None for d in inp.shape], batch, hw
        )
        if any(d is None for d in dims):
            shown = ["?" if d is None else d for d in dims]
            raise QVisionError(
                f"input '{inp.name}' has dynamic dims {shown}; pass --size HxW (or a model with fixed shapes)",
                path,
            )
        dtype = _NP.get(inp.type)
        if dtype is None:
            raise QVisionError(f"input '{inp.name}' has unsupported type {inp.type}", path)
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(dims).astype(dtype)
        else:
            feeds[inp.name] = rng.integers(0, 2, size=dims).astype(dtype)
    return feeds


def model_hw(model: onnx.ModelProto) -> tuple[int, int] | None:
    """The preprocessing's output size from the model's qvision metadata: the fixed one,
    or a representative one where it varies (text lines keep their aspect ratio)."""
    from qvision.data.preprocess import METADATA_KEY, parse_preprocess

    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return parse_preprocess(prop.value).typical_hw()
    return None
