"""Object detection: decode common output layouts, NMS, and COCO mAP via faster-coco-eval.

Layouts (``DecodeSpec.layout``), boxes in the model's input pixels unless ``normalized``:
- ``yolo``: one output [N, A, 4+C] (or [N, 4+C, A], YOLOv8's), cx cy w h then class scores;
- ``yolo-obj``: [N, A, 5+C], YOLOv5's, cx cy w h, objectness, class scores (score = obj x cls);
- ``ssd``: two outputs, boxes [N, A, 4] (x1 y1 x2 y2) and scores [N, A, C] (``class_offset``
  drops a background column).
The spec comes from the model's ``qvision.detection`` metadata or the caller.
"""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
from pydantic import BaseModel, ValidationError

from qvision.errors import MissingExtraError, QVisionError

METADATA_KEY = "qvision.detection"


class DecodeSpec(BaseModel):
    layout: Literal["yolo", "yolo-obj", "ssd"] = "yolo"
    normalized: bool = False  # boxes in 0..1 of the input instead of pixels
    score_threshold: float = 0.001  # low: mAP integrates over the whole score range
    iou_threshold: float = 0.65
    max_detections: int = 300
    class_offset: int = 0  # leading score columns that are not classes (SSD background)
    # yolo output is [4+C, A] (YOLOv8); None: guess, transposed when fewer rows than columns
    transposed: bool | None = None
    category_ids: list[int] | None = None  # class index -> COCO category id

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], given: dict | None = None) -> DecodeSpec:
        raw = given if given is not None else json.loads(metadata.get(METADATA_KEY, "{}"))
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise QVisionError(
                f"invalid detection decoder spec at '{'.'.join(map(str, err['loc']))}': {err['msg']}"
            ) from None


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression over x1 y1 x2 y2 boxes; indices kept, best first."""
    order = np.argsort(-scores, kind="stable")
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        union = area[i] + area[rest] - inter
        order = rest[inter <= iou * np.where(union > 0, union, 1)]
    return np.asarray(keep, dtype=np.int64)


def decode(outs: list[np.ndarray], i: int, spec: DecodeSpec, hw: tuple[int, int]):
    """Boxes (x1 y1 x2 y2, input pixels), scores and class indices of image ``i``."""
    if spec.layout == "ssd":
        if len(outs) < 2:
            raise QVisionError("ssd layout needs two outputs (boxes, scores)")
        boxes, cls_scores = outs[0][i].astype(np.float64), outs[1][i].astype(np.float64)
        cls_scores = cls_scores[:, spec.class_offset :]
    else:
        p = outs[0][i].astype(np.float64)
        if p.ndim != 2:
            raise QVisionError(f"yolo layouts need [N, A, 4+C] outputs, got {outs[0].shape}")
        if spec.transposed or (spec.transposed is None and p.shape[0] < p.shape[1]):
            p = p.T  # YOLOv8: [4+C, A]
        xy, wh = p[:, :2], p[:, 2:4]
        boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)
        obj = spec.layout == "yolo-obj"
        cls_scores = p[:, 5:] * p[:, 4:5] if obj else p[:, 4:]
    if spec.normalized:
        boxes = boxes * np.array([hw[1], hw[0], hw[1], hw[0]], dtype=np.float64)
    cls = cls_scores.argmax(axis=1)
    scores = cls_scores[np.arange(len(cls)), cls]
    ok = scores >= spec.score_threshold
    boxes, scores, cls = boxes[ok], scores[ok], cls[ok]
    if len(scores):
        shift = cls[:, None] * (boxes.max() + 1.0)  # class-wise NMS in one pass
        keep = nms(boxes + shift, scores, spec.iou_threshold)[: spec.max_detections]
        boxes, scores, cls = boxes[keep], scores[keep], cls[keep]
    return boxes, scores, cls


def to_original(boxes: np.ndarray, preprocess, width: int, height: int) -> np.ndarray:
    """Input-pixel boxes back to the original image (letterbox pads bottom/right)."""
    if preprocess.resize_mode not in ("letterbox", "exact") or preprocess.crop is not None:
        raise QVisionError(
            "detection needs resize_mode 'letterbox' or 'exact' without a crop in the preprocessing"
        )
    th, tw = (
        preprocess.resize
        if isinstance(preprocess.resize, tuple | list)
        else (preprocess.resize,) * 2
    )
    if preprocess.resize_mode == "letterbox":
        r = min(th / height, tw / width)
        sx = sy = r
    else:
        sx, sy = tw / width, th / height
    out = boxes / np.array([sx, sy, sx, sy])
    return np.clip(out, 0, [width, height, width, height])


def coco_map(gt: dict, detections: list[dict]) -> dict[str, float]:
    """mAP@[.5:.95] and mAP@.5 with faster-coco-eval (pycocotools' definition)."""
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError:
        raise MissingExtraError("faster-coco-eval", "coco", "detection mAP") from None
    if not detections:
        return {"map": 0.0, "map50": 0.0}
    g = COCO(gt)
    d = g.loadRes(detections)
    e = COCOeval_faster(g, d, "bbox", print_function=lambda *_: None)
    e.evaluate()
    e.accumulate()
    e.summarize()
    return {"map": float(max(e.stats[0], 0.0)), "map50": float(max(e.stats[1], 0.0))}


def box_agreement(a: list, b: list, iou: float = 0.5) -> float:
    """Share of reference detections (score >= 0.25) matched by a same-class detection."""
    if not b:
        return 1.0 if not a else 0.0
    hit = 0
    for (ba, ca), (bb, cb) in zip(a, b, strict=True):
        for box, c in zip(bb, cb, strict=True):
            same = ba[ca == c]
            if len(same) and _iou(box, same).max() >= iou:
                hit += 1
    total = sum(len(cb) for _, cb in b)
    return hit / total if total else 1.0


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-12)


def box_f1(a: np.ndarray, a_cls: np.ndarray, b: np.ndarray, b_cls: np.ndarray, iou: float = 0.5):
    """F1 of boxes ``a`` against boxes ``b`` of one image: one-to-one, same class, IoU >=
    ``iou``, best pairs first; 1.0 when both are empty."""
    if not len(a) and not len(b):
        return 1.0
    pairs = []
    for j, (box, c) in enumerate(zip(b, b_cls, strict=True)):
        if not len(a):
            break
        overlap = np.where(a_cls == c, _iou(box, a), 0.0)
        pairs += [(v, i, j) for i, v in enumerate(overlap) if v >= iou]
    used_a, used_b = set(), set()
    for _, i, j in sorted(pairs, reverse=True):
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
    return 2 * len(used_a) / (len(a) + len(b))
