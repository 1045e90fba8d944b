"""Decode untrusted image files into RGB/grayscale Pillow images, or say clearly why not."""

from __future__ import annotations

import warnings
from pathlib import Path

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
    import numpy as np

    arr = np.asarray(img, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    return Image.fromarray(arr.round().astype(np.uint8), mode="L")


def load_image(path: str | Path, mode: str = "RGB", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open, fully decode, apply EXIF orientation and convert to ``mode`` ('RGB' or 'L')."""
    path = Path(path)
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
                img = ImageOps.exif_transpose(img) or img
                return _convert(img, mode)
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
