"""Semantic-segmentation datasets: images with class-index PNG masks of the same size.

Layouts: Pascal VOC (``JPEGImages/`` + ``SegmentationClass/``; the masks choose the images,
as in VOC where most photos have none) or ``images/`` + ``masks/`` (every image needs a
mask). A mask is matched by file stem. ``classes.txt`` (one name a line) names the class
ids; pixels equal to the ignore index (VOC: 255, object borders) are not scored.

Bad pairs never crash evaluation: a missing mask or image, or a mask whose size differs
from its image, is counted (with an example) and the pair left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from qvision.data.datasets import Dataset, Problems, Sample, _existing_dir, _image_files
from qvision.errors import QVisionError

LAYOUTS = (("JPEGImages", "SegmentationClass"), ("images", "masks"))
IGNORE_INDEX = 255


@dataclass
class Masks(Problems):
    classes: list[str] = field(default_factory=list)
    ignore_index: int = IGNORE_INDEX


def is_segmentation_folder(root: Path) -> bool:
    return any((root / i).is_dir() and (root / m).is_dir() for i, m in LAYOUTS)


def _size(path: Path) -> tuple[int, int] | None:
    """Width and height from the header only (no decode); None if unreadable."""
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, SyntaxError, ValueError):
        return None


def open_segmentation(root: str | Path) -> Dataset:
    root = _existing_dir(root)
    layout = next(((i, m) for i, m in LAYOUTS if (root / i).is_dir() and (root / m).is_dir()), None)
    if layout is None:
        raise QVisionError(
            "not a segmentation dataset: expected JPEGImages/ + SegmentationClass/ (VOC) "
            "or images/ + masks/",
            root,
        )
    image_dir, mask_dir = root / layout[0], root / layout[1]
    masks = Masks()
    names = root / "classes.txt"
    if names.is_file():
        masks.classes = [n.strip() for n in names.read_text(encoding="utf-8").splitlines()]
        masks.classes = [n for n in masks.classes if n]
    images = {p.stem: p for p in _image_files(image_dir)}
    mask_files = {p.stem: p for p in _image_files(mask_dir)}
    voc = layout[0] == "JPEGImages"
    for stem in sorted(set(images) - set(mask_files)) if not voc else []:
        masks.note("image without a mask", images[stem].name)
    for stem in sorted(set(mask_files) - set(images)):
        masks.note("mask without an image", mask_files[stem].name)
    samples = []
    for stem in sorted(set(images) & set(mask_files)):
        image, mask = images[stem], mask_files[stem]
        a, b = _size(image), _size(mask)
        if a is not None and b is not None and a != b:
            masks.note(
                "mask size differs from its image",
                f"{mask.name} {b[0]}x{b[1]} vs {image.name} {a[0]}x{a[1]}",
            )
            continue
        samples.append(Sample(image, mask=mask))  # unreadable files fail later, per sample
    if not samples:
        raise QVisionError(
            f"no image with a matching mask under {layout[0]}/ and {layout[1]}/", root
        )
    return Dataset(root, samples, masks.classes, annotations=masks)
