"""Decode untrusted image files into RGB/grayscale Pillow images, or say clearly why not."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from qvision.errors import QVisionError

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    ".pbm",
)
# Far above any camera photo; stops decompression bombs before their pixels are allocated.
MAX_PIXELS = 100_000_000


def is_image_name(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite transparent images over white, as a viewer shows them."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and float images: scale their range to 0..255 instead of clipping."""
    arr = np.asarray(img, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    return Image.fromarray(arr.round().astype(np.uint8), mode="L")


def load_image(path: str | Path, mode: str = "RGB", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open, fully decode, apply EXIF orientation and convert to ``mode`` ('RGB' or 'L')."""
    return _decode(
        Path(path), max_pixels, lambda img: _convert(ImageOps.exif_transpose(img) or img, mode)
    )


def image_size(path: str | Path) -> tuple[int, int]:
    """Width and height as ``load_image`` returns the picture (EXIF rotation applied),
    from the header alone."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            w, h = img.size
            rotated = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # orientation tag
    except (OSError, SyntaxError, ValueError) as exc:
        raise QVisionError(f"not a readable image ({exc})", path) from None
    return (h, w) if rotated else (w, h)


def load_mask(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A class-index mask (palette or grayscale PNG, VOC style) as an int32 [H, W] array.

    No EXIF rotation and no colour conversion: the pixel values are the class ids."""
    path = Path(path)

    def indices(img: Image.Image) -> np.ndarray:
        if img.mode not in ("P", "L", "I", "I;16", "1"):
            raise QVisionError(
                f"mask is {img.mode}, not class indices (expected a palette or grayscale PNG)",
                path,
            )
        return np.asarray(img, dtype=np.int32)

    return _decode(path, max_pixels, indices)


def _decode(path: Path, max_pixels: int, finish):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise QVisionError(
                        f"image is {w}x{h} = {w * h} pixels, over the {max_pixels} limit "
                        "(possible decompression bomb)",
                        path,
                    )
                img.seek(0)  # first frame of GIF/TIFF stacks
                img.load()
                return finish(img)
    except QVisionError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise QVisionError(f"refused as a decompression bomb ({exc})", path) from None
    except UnidentifiedImageError:
        raise QVisionError("not a readable image (unknown or corrupt format)", path) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise QVisionError(f"corrupt or truncated image ({exc})", path) from None


def _convert(img: Image.Image, mode: str) -> Image.Image:
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        img = _flatten_alpha(img)
    elif img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        img = _to_8bit(img)
    # CMYK, YCbCr, P, 1, L: Pillow's conversions are the standard ones.
    return img.convert(mode) if img.mode != mode else img.copy()
