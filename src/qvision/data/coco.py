"""Detection datasets: COCO JSON (``annotations.json`` beside the images) or YOLO txt
(``images/``, ``labels/*.txt`` with class cx cy w h normalized, ``names.txt``), both read
into one COCO-style ground truth.

Bad annotations never crash evaluation: a listed image that is missing, a box outside its
image, an unknown category or a degenerate box is counted (with an example) in
``Detections.problems``; boxes partly outside are clipped to the image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from qvision.data.datasets import Dataset, Problems, Sample, _existing_dir, _image_files
from qvision.errors import QVisionError

COCO_FILE = "annotations.json"
YOLO_NAMES = "names.txt"


@dataclass
class Detections(Problems):
    """COCO ground truth plus what had to be dropped or fixed on the way in."""

    gt: dict = field(default_factory=dict)
    labelled: bool = True  # False: a plain image folder, scored against a reference only


def is_detection_folder(root: Path) -> bool:
    return (root / COCO_FILE).is_file() or (root / YOLO_NAMES).is_file()


def _add_box(det: Detections, ann: dict, w: int, h: int, where: str) -> None:
    """Clip ``ann['bbox']`` (x y w h) to the image and keep it, or count why not."""
    x, y, bw, bh = (float(v) for v in ann["bbox"])
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(float(w), x + bw), min(float(h), y + bh)
    box = [x1, y1, x2 - x1, y2 - y1]
    if box[2] <= 0 or box[3] <= 0:
        det.note("box outside its image or empty", where)
        return
    if (x1, y1, x2, y2) != (x, y, x + bw, y + bh):
        det.note("box clipped to its image", where)
    ann = {"iscrowd": 0, **ann, "bbox": box}
    ann.setdefault("area", box[2] * box[3])
    det.gt["annotations"].append(ann)


def read_coco(root: str | Path) -> tuple[Dataset, Detections]:
    root = _existing_dir(root)
    path = root / COCO_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise QVisionError(f"not valid JSON (line {exc.lineno}): {exc.msg}", path) from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise QVisionError(f"COCO file has no '{key}' list", path)
    det = Detections(gt={"images": [], "annotations": [], "categories": data["categories"]})
    cats = {c["id"] for c in data["categories"]}
    samples, images = [], {}
    for im in data["images"]:
        file = root / im["file_name"]
        if not file.is_file() and (root / "images" / im["file_name"]).is_file():
            file = root / "images" / im["file_name"]
        if not file.is_file():
            det.note("listed image missing", im["file_name"])
            continue
        if "width" not in im or "height" not in im:
            with Image.open(file) as img:
                im = {**im, "width": img.width, "height": img.height}
        images[im["id"]] = im
        det.gt["images"].append(im)
        samples.append(Sample(file, image_id=im["id"]))
    for i, ann in enumerate(data["annotations"]):
        im = images.get(ann.get("image_id"))
        if im is None:
            det.note("annotation of a missing image", f"annotation {ann.get('id', i)}")
            continue
        if ann.get("category_id") not in cats:
            det.note(
                "unknown category id", f"annotation {ann.get('id', i)}: {ann.get('category_id')}"
            )
            continue
        ann = {**ann, "id": ann.get("id", i + 1)}
        _add_box(det, ann, im["width"], im["height"], f"annotation {ann['id']}")
    if not samples:
        raise QVisionError("none of the listed images exist", path)
    return Dataset(root, samples), det


def read_yolo(root: str | Path) -> tuple[Dataset, Detections]:
    root = _existing_dir(root)
    names = [n.strip() for n in (root / YOLO_NAMES).read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    det = Detections(
        gt={
            "images": [],
            "annotations": [],
            "categories": [{"id": i, "name": n} for i, n in enumerate(names)],
        }
    )
    files = _image_files(root / "images") if (root / "images").is_dir() else []
    if not files:
        raise QVisionError("no images under images/", root)
    samples = []
    for image_id, file in enumerate(files, 1):
        with Image.open(file) as img:
            w, h = img.size
        det.gt["images"].append(
            {"id": image_id, "file_name": str(file.relative_to(root)), "width": w, "height": h}
        )
        samples.append(Sample(file, image_id=image_id))
        label = root / "labels" / file.relative_to(root / "images").with_suffix(".txt")
        if not label.is_file():
            continue  # an image without objects
        for n, line in enumerate(label.read_text(encoding="utf-8").splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            where = f"{label.name}:{n}"
            try:
                cls, cx, cy, bw, bh = int(parts[0]), *(float(v) for v in parts[1:5])
            except (ValueError, IndexError):
                det.note("unreadable label line", where)
                continue
            if not 0 <= cls < len(names):
                det.note("unknown category id", f"{where}: {cls}")
                continue
            ann = {
                "id": len(det.gt["annotations"]) + 1,
                "image_id": image_id,
                "category_id": cls,
                "bbox": [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h],
            }
            _add_box(det, ann, w, h, where)
    return Dataset(root, samples), det


def open_detection(root: str | Path) -> tuple[Dataset, Detections]:
    root = _existing_dir(root)
    if (root / COCO_FILE).is_file():
        return read_coco(root)
    if (root / YOLO_NAMES).is_file():
        return read_yolo(root)
    return read_unlabelled(root)


def read_unlabelled(root: Path) -> tuple[Dataset, Detections]:
    """A folder of images without boxes: only fidelity to a reference can be scored."""
    files = _image_files(root)
    if not files:
        raise QVisionError(f"no images, and no {COCO_FILE} (COCO) or {YOLO_NAMES} (YOLO)", root)
    det = Detections(gt={"images": [], "annotations": [], "categories": []}, labelled=False)
    for image_id, file in enumerate(files, 1):
        try:
            with Image.open(file) as img:
                w, h = img.size
        except Exception:  # the loader reports unreadable files when it decodes them
            w = h = 0
        det.gt["images"].append(
            {"id": image_id, "file_name": str(file.relative_to(root)), "width": w, "height": h}
        )
    return Dataset(root, [Sample(f, image_id=i) for i, f in enumerate(files, 1)]), det
