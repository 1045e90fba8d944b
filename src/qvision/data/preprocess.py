"""Image -> model input tensor, described by a plain, serializable spec.

The spec travels inside exported models as ONNX metadata (``qvision.preprocess``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from PIL import Image
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from qvision.errors import QVisionError

METADATA_KEY = "qvision.preprocess"
TASK_KEY = "qvision.task"  # which task adapter reads the outputs (the zoo sets it)

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


def _pair(v: int | list[int] | tuple[int, int] | None) -> tuple[int, int] | None:
    if v is None:
        return None
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


class Preprocess(BaseModel):
    """How to turn a picture into the input tensor.

    Pixel value ``p`` (0..255) becomes ``(p * scale - mean[c]) / std[c]``.
    ``resize_mode``:
      - ``shorter``: scale so the shorter side equals ``resize`` (an int), keep aspect;
      - ``exact``: resize to ``resize`` = [height, width];
      - ``height``: scale to ``resize[0]`` rows keeping aspect, width capped at
        ``resize[1]``, right side padded to ``resize[1]`` (fixed-shape line recognizers);
      - ``line``: scale to ``resize[0]`` rows keeping aspect; the tensor is as wide as the
        line, rounded up to ``width_multiple``, at least ``min_width``, at most ``resize[1]``
        (a wider line is squeezed to it), right side padded: each line keeps its own
        aspect ratio, as PaddleOCR feeds its recognizers. Widths differ between images, so
        a batch pads its lines to the widest (``collate``);
      - ``letterbox``: fit inside ``resize`` keeping aspect, pad bottom/right (detectors).
    ``crop`` is a centre crop [height, width] applied after resizing. Padding uses
    ``pad_value`` in the normalized output units.
    """

    model_config = ConfigDict(extra="forbid")

    resize: int | tuple[int, int] | None = 256
    resize_mode: Literal["shorter", "exact", "height", "line", "letterbox"] = "shorter"
    crop: int | tuple[int, int] | None = 224
    interpolation: Literal["nearest", "bilinear", "bicubic", "lanczos", "box"] = "bilinear"
    scale: float = 1.0 / 255.0
    mean: list[float] = Field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = Field(default_factory=lambda: [0.229, 0.224, 0.225])
    channel_order: Literal["rgb", "bgr", "gray"] = "rgb"
    layout: Literal["nchw", "nhwc"] = "nchw"
    pad_value: float = 0.0
    # ``line`` mode only: widths snap to multiples of this (fewer distinct shapes), and
    # short lines widen to ``min_width`` (PaddleOCR's 320 for 48-row lines)
    width_multiple: int = Field(default=32, gt=0)
    min_width: int | None = Field(default=None, gt=0)

    @field_validator("std")
    @classmethod
    def _std_nonzero(cls, v: list[float]) -> list[float]:
        if any(s == 0 for s in v):
            raise ValueError("std must not contain 0")
        return v

    @model_validator(mode="after")
    def _sizes_and_channels(self) -> Preprocess:
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if value is not None and min(_pair(value)) <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        for name in ("mean", "std"):
            if len(getattr(self, name)) not in (1, self.channels):
                raise ValueError(
                    f"{name} has {len(getattr(self, name))} values; {self.channel_order} "
                    f"images have {self.channels} channel(s) (give {self.channels} or 1)"
                )
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale}")
        return self

    @model_validator(mode="after")
    def _line_sizes(self) -> Preprocess:
        if self.resize_mode != "line":
            return self
        if not isinstance(self.resize, tuple):
            raise ValueError("resize_mode 'line' needs resize [height, max width]")
        if self.min_width is not None and self.min_width > self.resize[1]:
            raise ValueError(
                f"min_width {self.min_width} is larger than the width cap resize[1] = {self.resize[1]}"
            )
        return self

    @property
    def channels(self) -> int:
        return 1 if self.channel_order == "gray" else 3

    def output_hw(self) -> tuple[int, int] | None:
        """Height and width of the tensor, when fixed by the spec."""
        if self.crop is not None:
            return _pair(self.crop)
        if self.resize_mode in ("exact", "height", "letterbox"):
            return _pair(self.resize)
        return None

    def typical_hw(self) -> tuple[int, int] | None:
        """A representative tensor size (synthetic inputs for timing and energy):
        ``output_hw()``, or for ``line`` mode the narrowest line, ``min_width`` wide (the
        width of most short lines), else the widest, at the cap (an upper bound)."""
        if self.resize_mode != "line" or self.crop is not None:
            return self.output_hw()
        height, cap = self.resize
        return height, self.min_width or cap

    def line_width(self, w: int, h: int) -> int:
        """``line`` mode: the tensor width for a ``w`` x ``h`` picture."""
        height, cap = self.resize
        width = max(1, int(np.ceil(height * w / h)))
        width = -(-width // self.width_multiple) * self.width_multiple
        return min(cap, max(width, self.min_width or 0))

    def to_json(self) -> str:
        return self.model_dump_json()

    # -- the transform itself ---------------------------------------------------------
    def apply(self, img: Image.Image) -> np.ndarray:
        """One PIL image (RGB or L) -> float32 array, CHW or HWC per ``layout``."""
        img = img.convert("L" if self.channel_order == "gray" else "RGB")
        img, valid = self._resize(img)
        img = self._crop(img)
        arr = np.asarray(img, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if self.channel_order == "bgr":
            arr = arr[:, :, ::-1]
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        arr = (arr * np.float32(self.scale) - mean) / std
        if valid is not None:  # padded area gets pad_value, in normalized units
            vh, vw = valid
            arr[vh:, :, :] = self.pad_value
            arr[:, vw:, :] = self.pad_value
        arr = arr.astype(np.float32, copy=False)
        return np.ascontiguousarray(arr.transpose(2, 0, 1) if self.layout == "nchw" else arr)

    def _resize(self, img: Image.Image) -> tuple[Image.Image, tuple[int, int] | None]:
        if self.resize is None:
            return img, None
        method = _RESAMPLE[self.interpolation]
        w, h = img.size
        if self.resize_mode == "shorter":
            if not isinstance(self.resize, int):
                raise QVisionError("resize_mode 'shorter' needs an integer resize")
            size = self.resize
            # Same rounding as torchvision.transforms.Resize(int): the long side truncates.
            if w <= h:
                new_w, new_h = size, int(size * h / w)
            else:
                new_w, new_h = int(size * w / h), size
            return img.resize((new_w, new_h), method), None
        th, tw = _pair(self.resize)
        if self.resize_mode == "exact":
            return img.resize((tw, th), method), None
        if self.resize_mode in ("height", "line"):
            if self.resize_mode == "line":
                tw = self.line_width(w, h)
            new_w = min(tw, max(1, int(np.ceil(th * w / h))))
            new_h = th
        else:  # letterbox
            ratio = min(th / h, tw / w)
            new_w, new_h = max(1, round(w * ratio)), max(1, round(h * ratio))
        canvas = Image.new(img.mode, (tw, th))
        canvas.paste(img.resize((new_w, new_h), method), (0, 0))
        return canvas, (new_h, new_w)

    def _crop(self, img: Image.Image) -> Image.Image:
        if self.crop is None:
            return img
        ch, cw = _pair(self.crop)
        w, h = img.size
        if ch > h or cw > w:
            raise QVisionError(f"centre crop {ch}x{cw} is larger than the resized image {h}x{w}")
        # torchvision's CenterCrop offsets
        top = int(round((h - ch) / 2.0))
        left = int(round((w - cw) / 2.0))
        return img.crop((left, top, left + cw, top + ch))


def collate(items: list[np.ndarray], pad_value: float = 0.0) -> np.ndarray:
    """Per-image arrays -> one batch. Arrays of different sizes (``line`` mode: each line
    as wide as itself) are first padded with ``pad_value`` at the end of each axis to the
    largest, as PaddleOCR pads a batch to its widest line."""
    return np.stack(_padded(items, pad_value, 0))


def concat_padded(batches: list[np.ndarray], pad_value: float = 0.0) -> np.ndarray:
    """Batches -> one batch along axis 0, padding the other axes as ``collate`` does; the
    same as ``np.concatenate`` when they already match."""
    return np.concatenate(_padded(batches, pad_value, 1))


def _padded(arrays: list[np.ndarray], value: float, first: int) -> list[np.ndarray]:
    """``arrays`` padded at the end of every axis from ``first`` on to the largest size."""
    if len({a.shape[first:] for a in arrays}) <= 1:
        return arrays
    big = np.max([a.shape[first:] for a in arrays], axis=0)
    return [
        np.pad(
            a,
            [(0, 0)] * first + [(0, int(n - s)) for n, s in zip(big, a.shape[first:], strict=True)],
            constant_values=np.float32(value),
        )
        for a in arrays
    ]


PRESETS: dict[str, Preprocess] = {
    "imagenet": Preprocess(),
    # TF-style models (EfficientNet-Lite): (x - 127) / 128
    "tf": Preprocess(scale=1.0, mean=[127.0, 127.0, 127.0], std=[128.0, 128.0, 128.0]),
}


def parse_preprocess(value: str | dict | Preprocess) -> Preprocess:
    """A preset name, a JSON/YAML file path, a JSON string, or a dict."""
    if isinstance(value, Preprocess):
        return value
    if isinstance(value, dict):
        return _validate(value, "<preprocess>")
    if value in PRESETS:
        return PRESETS[value].model_copy(deep=True)
    path = Path(value)
    if path.suffix.lower() in (".json", ".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise QVisionError(f"no such preprocess file (presets: {', '.join(PRESETS)})", path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise QVisionError(
                f"cannot parse preprocess file: {str(exc).splitlines()[0]}", path
            ) from None
        if not isinstance(data, dict):
            raise QVisionError("preprocess file must hold a mapping of settings", path)
        return _validate(data, path)
    if value.lstrip().startswith("{"):
        try:
            return _validate(json.loads(value), "<preprocess>")
        except json.JSONDecodeError as exc:
            raise QVisionError(f"invalid preprocess JSON: {exc}") from None
    raise QVisionError(
        f"unknown preprocess '{value}': use one of {', '.join(PRESETS)} or a JSON/YAML file"
    )


def _validate(data: dict, where: str | Path) -> Preprocess:
    try:
        return Preprocess.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        if not loc:  # a check across settings (model validator)
            msg = err["msg"].removeprefix("Value error, ")
            raise QVisionError(f"invalid preprocess: {msg}", where) from None
        raise QVisionError(f"invalid preprocess setting '{loc}': {err['msg']}", where) from None
