"""Synthetic text images with exact labels, rendered with Pillow's built-in font.

Deterministic by seed: image i draws from its own generator seeded with (seed, i), so any
subset can be regenerated. Variation: font size, letter spacing, ink/background contrast,
background gradient, blur and pixel noise.

- ``lines`` (OCR recognition): one cropped line per image; ``labels.txt`` holds
  ``relative/path<TAB>text``, as ``qvision eval --task ocr-rec`` reads.
- ``pages`` (OCR detection): several horizontal lines placed apart on a page, plus a few
  non-text strokes; ``labels.txt`` holds ``relative/path<TAB>JSON`` with PaddleOCR's
  detection label format, ``[{"transcription": ..., "points": [[x, y] x 4]}]`` (the ink box
  of each line grown by 3 pixels), as ``qvision eval --task ocr-det`` reads; the same boxes
  filled in ``masks/`` (1 text, 0 background) with ``classes.txt``, as ``--task
  segmentation`` reads.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

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
PAD = 3  # pixels around the ink of a page's text line in its ground-truth box
# inclusive ranges a line draws from by default (the draws existing seeds were made with)
LINE_WORDS = (1, 4)
LINE_FONT = (22, 43)
LIMITS = {"--words": (1, 50), "--font-size": (6, 300)}  # what renders a legible, sane line


def parse_range(text: str, flag: str) -> tuple[int, int]:
    """``'2-5'`` -> (2, 5), ``'3'`` -> (3, 3), checked against ``LIMITS[flag]``."""
    from qvision.errors import QVisionError

    lo, dash, hi = text.strip().partition("-")
    try:
        pair = (int(lo), int(hi) if dash else int(lo))
    except ValueError:
        raise QVisionError(f"{flag} must look like 2-5 (a range) or 3, got '{text}'") from None
    return check_range(pair, flag)


def check_range(pair: tuple[int, int], flag: str) -> tuple[int, int]:
    from qvision.errors import QVisionError

    low, high = LIMITS[flag]
    lo, hi = int(pair[0]), int(pair[1])
    if not low <= lo <= hi <= high:
        raise QVisionError(f"{flag} {lo}-{hi}: need {low} <= min <= max <= {high}")
    return lo, hi


def _text(rng: np.random.Generator, words: tuple[int, int] = LINE_WORDS) -> str:
    parts = []
    for _ in range(int(rng.integers(words[0], words[1] + 1))):
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


def render_line(
    text: str, rng: np.random.Generator, font_size: tuple[int, int] = LINE_FONT
) -> Image.Image:
    size = int(rng.integers(font_size[0], font_size[1] + 1))
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


def _page_colours(rng: np.random.Generator) -> tuple[int, int]:
    paper = int(rng.integers(150, 256))
    ink = int(rng.integers(0, paper - 89))
    return (paper, ink) if rng.random() >= 0.2 else (ink, paper)


def render_page(
    rng: np.random.Generator, width: int = 640, height: int = 480
) -> tuple[Image.Image, list[dict]]:
    """A page with 2-8 non-overlapping text lines and up to 3 strokes; PaddleOCR-style regions."""
    paper, ink = _page_colours(rng)
    grad = np.linspace(0, float(rng.uniform(-40, 40)), height)[:, None]
    bg = np.clip(paper + grad + np.zeros((1, width)), 0, 255).astype(np.uint8)
    img = Image.fromarray(np.stack([bg] * 3, axis=-1))
    draw = ImageDraw.Draw(img)
    taken: list[tuple[float, float, float, float]] = []

    def free(box, margin):
        x0, y0, x1, y1 = box
        return all(
            x1 + margin < a or b + margin < x0 or y1 + margin < c or d + margin < y0
            for a, c, b, d in taken
        )

    regions = []
    for _ in range(int(rng.integers(2, 9))):
        text = _text(rng)
        font = ImageFont.load_default(size=int(rng.integers(16, 41)))
        for _try in range(30):
            x, y = float(rng.uniform(4, width - 4)), float(rng.uniform(4, height - 4))
            box = draw.textbbox((x, y), text, font=font)
            inside = box[2] <= width - 4 and box[3] <= height - 4
            if inside and free(box, 12):
                draw.text((x, y), text, font=font, fill=(ink, ink, ink))
                taken.append(box)
                # annotators draw a little outside the ink; a tight box makes small words
                # hinge on a pixel or two of IoU
                x0, y0 = max(0, int(box[0]) - PAD), max(0, int(box[1]) - PAD)
                x1, y1 = min(width, int(box[2]) + PAD), min(height, int(box[3]) + PAD)
                regions.append(
                    {"transcription": text, "points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]}
                )
                break
    for _ in range(int(rng.integers(0, 4))):  # strokes: rules and boxes, not text
        x0, y0 = float(rng.uniform(0, width - 40)), float(rng.uniform(0, height - 40))
        box = (x0, y0, x0 + float(rng.uniform(30, 200)), y0 + float(rng.uniform(2, 60)))
        if free(box, 8):
            tone = int((paper + ink) / 2)
            draw.rectangle(box, outline=(tone,) * 3, width=int(rng.integers(1, 4)))
            taken.append(box)
    blur = float(rng.uniform(0, 1.0))
    if blur > 0.3:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    noise = rng.normal(0, float(rng.uniform(0, 6)), (height, width, 1))
    arr = np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr), regions


@contextmanager
def new_folder(out_dir, count: int) -> Iterator[Path]:
    """A temporary folder (with ``images/``) beside ``out_dir`` to build a set of ``count``
    items in, renamed to ``out_dir`` when the block ends and removed if it fails, so a
    failure leaves nothing half-written; an existing non-empty output is refused."""
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
        yield tmp
        if root.exists():
            root.rmdir()
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_set(
    out_dir, count: int, make: Callable[[int, Path], tuple[str, str]], extra: dict | None = None
) -> list:
    """``count`` rows made by ``make(i, folder)``, labels.txt and the ``extra`` files
    (name -> text) in the new folder ``out_dir``."""
    with new_folder(out_dir, count) as tmp:
        rows = [make(i, tmp) for i in range(count)]
        (tmp / LABELS).write_text("".join(f"{p}\t{t}\n" for p, t in rows), encoding="utf-8")
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
    return rows


def synth_lines(
    out_dir,
    count: int,
    seed: int,
    words: tuple[int, int] = LINE_WORDS,
    font_size: tuple[int, int] = LINE_FONT,
) -> list[tuple[str, str]]:
    """``count`` line images and labels.txt in the new folder ``out_dir``; each line has
    ``words`` (min, max) words in a font ``font_size`` (min, max) pixels tall."""
    words, font_size = check_range(words, "--words"), check_range(font_size, "--font-size")

    def make(i: int, folder: Path) -> tuple[str, str]:
        rng = np.random.default_rng([seed, i])
        text = _text(rng, words)
        rel = f"images/line_{i:05d}.png"
        render_line(text, rng, font_size).save(folder / rel)
        return rel, text

    return _write_set(out_dir, count, make)


def synth_pages(
    out_dir, count: int, seed: int, width: int = 640, height: int = 480
) -> list[tuple[str, str]]:
    """``count`` pages and labels.txt (PaddleOCR detection labels) in the new folder ``out_dir``."""

    def make(i: int, folder: Path) -> tuple[str, str]:
        img, regions = render_page(np.random.default_rng([seed, i]), width, height)
        rel = f"images/page_{i:05d}.png"
        img.save(folder / rel)
        # the same labels as a text/background mask (masks/ + classes.txt), so the folder is
        # also a segmentation set: a text detector's probability map scored by mIoU
        (folder / "masks").mkdir(exist_ok=True)
        mask = Image.new("L", img.size, 0)
        draw = ImageDraw.Draw(mask)
        for r in regions:
            draw.polygon([tuple(p) for p in r["points"]], fill=1)
        mask.save(folder / "masks" / f"page_{i:05d}.png")
        return rel, json.dumps(regions, ensure_ascii=False)

    return _write_set(out_dir, count, make, {"classes.txt": "background\ntext\n"})
