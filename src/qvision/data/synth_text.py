"""Synthetic text-line images with exact labels, rendered with Pillow's built-in font.

Deterministic by seed: line i draws from its own generator seeded with (seed, i), so any
subset can be regenerated. Variation: font size, letter spacing, ink/background contrast,
background gradient, blur and pixel noise. Output is the OCR recognition layout that
``qvision eval --task ocr-rec`` reads: ``images/*.png`` and ``labels.txt`` with one
``relative/path<TAB>text`` per line.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "that",
    "this",
    "be",
    "are",
    "was",
    "it",
    "or",
    "an",
    "not",
    "have",
    "data",
    "model",
    "image",
    "quantized",
    "speed",
    "vision",
    "camera",
    "sensor",
    "frame",
    "pixel",
    "street",
    "market",
    "river",
    "north",
    "south",
    "east",
    "west",
    "total",
    "price",
    "order",
    "number",
    "invoice",
    "delivery",
    "station",
    "platform",
    "coffee",
    "rocket",
    "garden",
    "window",
    "energy",
    "signal",
    "label",
    "truck",
    "train",
    "bus",
    "ticket",
    "exit",
    "open",
]
LABELS = "labels.txt"


def _text(rng: np.random.Generator) -> str:
    parts = []
    for _ in range(int(rng.integers(1, 5))):
        r = rng.random()
        if r < 0.15:
            parts.append(str(int(rng.integers(0, 10000))))
        elif r < 0.22:
            parts.append(f"{rng.integers(1, 32):02d}-{rng.integers(1, 13):02d}")
        else:
            w = str(rng.choice(WORDS))
            if rng.random() < 0.2:
                w = w.capitalize()
            elif rng.random() < 0.05:
                w = w.upper()
            parts.append(w)
    return " ".join(parts)


def render_line(text: str, rng: np.random.Generator) -> Image.Image:
    size = int(rng.integers(22, 44))
    font = ImageFont.load_default(size=size)
    spacing = float(rng.uniform(0.0, 0.15)) * size
    paper = int(rng.integers(150, 256))
    ink = int(rng.integers(0, paper - 89))  # at least 90 levels of contrast: legible
    if rng.random() < 0.3:  # light text on dark
        ink, paper = paper, ink
    widths = [font.getlength(c) for c in text]
    width = int(sum(widths) + spacing * max(len(text) - 1, 0)) + 2 * size // 2
    height = int(size * 1.5)
    grad = np.linspace(0, float(rng.uniform(-40, 40)), width)[None, :]
    bg = np.clip(paper + grad + np.zeros((height, 1)), 0, 255).astype(np.uint8)
    img = Image.fromarray(np.stack([bg] * 3, axis=-1))
    draw = ImageDraw.Draw(img)
    x, y = size / 2, (height - size) / 2 - size * 0.1
    for c, w in zip(text, widths, strict=True):
        draw.text((x, y), c, font=font, fill=(ink, ink, ink))
        x += w + spacing
    blur = float(rng.uniform(0, 1.0))
    if blur > 0.3:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    noise = rng.normal(0, float(rng.uniform(0, 6)), (height, width, 1))
    arr = np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def synth_lines(out_dir, count: int, seed: int) -> list[tuple[str, str]]:
    """Write ``count`` line images and labels.txt into the new folder ``out_dir``
    (built beside it and renamed, so a failure leaves nothing half-written)."""
    import shutil
    import tempfile
    from pathlib import Path

    from qvision.errors import QVisionError

    root = Path(out_dir)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise QVisionError("output exists and is not an empty folder; choose a new one", root)
    if count < 1:
        raise QVisionError("--count must be at least 1")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        (tmp / "images").mkdir()
        rows = []
        for i in range(count):
            rng = np.random.default_rng([seed, i])
            text = _text(rng)
            rel = f"images/line_{i:05d}.png"
            render_line(text, rng).save(tmp / rel)
            rows.append((rel, text))
        (tmp / LABELS).write_text("".join(f"{p}\t{t}\n" for p, t in rows), encoding="utf-8")
        if root.exists():
            root.rmdir()
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rows
