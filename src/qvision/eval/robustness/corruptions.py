"""Image corruptions at three severities (in the spirit of Hendrycks & Dietterich's
ImageNet-C): lighting, contrast, sensor noise, defocus and motion blur, JPEG, occlusion and
fog. Each maps a PIL RGB image to a corrupted one, deterministically for a given generator.

Blur and occlusion sizes scale with the image's shorter side relative to 224 pixels, so a
severity means about the same thing at the model's input resolution whatever the photo size.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image

SEVERITIES = (1, 2, 3)


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), np.float32)


def _img(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8))


def _scale(img: Image.Image) -> float:
    return min(img.size) / 224.0


def dark(img, s, rng):
    return _img(_arr(img) * (0.6, 0.4, 0.25)[s - 1])


def bright(img, s, rng):
    a = _arr(img)
    k = (0.3, 0.5, 0.7)[s - 1]
    return _img(a + (255 - a) * k)


def contrast(img, s, rng):
    a = _arr(img)
    k = (0.6, 0.4, 0.25)[s - 1]
    return _img((a - a.mean()) * k + a.mean())


def gaussian_noise(img, s, rng):
    a = _arr(img)
    return _img(a + rng.normal(0, (0.04, 0.08, 0.14)[s - 1] * 255, a.shape))


def _convolve(a: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Per-channel 2-D convolution via FFT, edges padded by reflection."""
    kh, kw = kernel.shape
    ph, pw = kh // 2, kw // 2
    p = np.pad(a, ((ph, ph), (pw, pw), (0, 0)), mode="reflect")
    shape = (p.shape[0] + kh - 1, p.shape[1] + kw - 1)
    fk = np.fft.rfft2(kernel, shape)
    out = np.fft.irfft2(np.fft.rfft2(p, shape, axes=(0, 1)) * fk[..., None], shape, axes=(0, 1))
    return out[2 * ph : 2 * ph + a.shape[0], 2 * pw : 2 * pw + a.shape[1]]


def defocus_blur(img, s, rng):
    r = (1.5, 3.0, 5.0)[s - 1] * _scale(img)
    n = int(np.ceil(r))
    y, x = np.mgrid[-n : n + 1, -n : n + 1]
    disk = (x**2 + y**2 <= r**2).astype(np.float32)
    return _img(_convolve(_arr(img), disk / disk.sum()))


def motion_blur(img, s, rng):
    length = max(2, int(round((7, 13, 21)[s - 1] * _scale(img))))
    angle = rng.uniform(0, np.pi)
    n = length // 2
    k = np.zeros((2 * n + 1, 2 * n + 1), np.float32)
    for t in np.linspace(-n, n, 4 * length):
        k[int(round(n + t * np.sin(angle))), int(round(n + t * np.cos(angle)))] = 1
    return _img(_convolve(_arr(img), k / k.sum()))


def jpeg(img, s, rng):
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=(30, 15, 7)[s - 1])
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def occlusion(img, s, rng):
    """Grey patches covering about 10, 20 or 35 % of the picture."""
    a = _arr(img)
    h, w = a.shape[:2]
    target = (0.10, 0.20, 0.35)[s - 1] * h * w
    covered = np.zeros((h, w), bool)
    while covered.sum() < target:
        ph, pw = (int(rng.uniform(0.1, 0.3) * d) + 1 for d in (h, w))
        y, x = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        covered[y : y + ph, x : x + pw] = True
    a[covered] = 128
    return _img(a)


def fog(img, s, rng):
    """Blend towards white through a smooth random field (sum of upsampled noise octaves)."""
    a = _arr(img)
    h, w = a.shape[:2]
    field = np.zeros((h, w), np.float32)
    for octave, weight in ((4, 1.0), (8, 0.5), (16, 0.25)):
        small = Image.fromarray((rng.random((octave, octave)) * 255).astype(np.uint8))
        field += weight * np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), np.float32)
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-6)
    k = (0.35, 0.55, 0.75)[s - 1] * (0.5 + 0.5 * field)[..., None]
    return _img(a * (1 - k) + 220 * k)


CORRUPTIONS: dict[str, Callable] = {
    "dark": dark,
    "bright": bright,
    "contrast": contrast,
    "gaussian-noise": gaussian_noise,
    "defocus-blur": defocus_blur,
    "motion-blur": motion_blur,
    "jpeg": jpeg,
    "occlusion": occlusion,
    "fog": fog,
}
