"""Object detection: decode common output layouts, NMS, and COCO mAP via faster-coco-eval.

Layouts (``DecodeSpec.layout``), boxes in the model's input pixels unless ``normalized``:
- ``yolo``: one output [N, A, 4+C] (or [N, 4+C, A], YOLOv8's), cx cy w h then class scores;
- ``yolo-obj``: [N, A, 5+C], YOLOv5's, cx cy w h, objectness, class scores (score = obj x cls);
- ``ssd``: two outputs, boxes [N, A, 4] (x1 y1 x2 y2) and scores [N, A, C] (``class_offset``
  drops a background column);
- ``picodet``: PaddleDetection's GFL/PicoDet export, one score output [N, A_s, C] (after
  the sigmoid) per stride, then one distance-distribution output [N, A_s, 4(R+1)] per stride;
  each side's distance is the expectation of a softmax over R+1 bins, in strides, from the
  anchor point's centre.
The spec comes from the model's ``qvision.detection`` metadata or the caller.
"""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
from pydantic import BaseModel, ValidationError

from qvision.errors import MissingExtraError, QVisionError

METADATA_KEY = "qvision.detection"
# A reference's boxes at or above this score count as what it "sees": box agreement and the
# label-free mAP take them as the truth (Ultralytics' default confidence for predictions)
REFERENCE_SCORE = 0.25


class DecodeSpec(BaseModel):
    layout: Literal["yolo", "yolo-obj", "ssd", "picodet"] = "yolo"
    normalized: bool = False  # boxes in 0..1 of the input instead of pixels
    score_threshold: float = 0.001  # low: mAP integrates over the whole score range
    iou_threshold: float = 0.65
    max_detections: int = 300
    class_offset: int = 0  # leading score columns that are not classes (SSD background)
    # yolo output is [4+C, A] (YOLOv8); None: guess, transposed when fewer rows than columns
    transposed: bool | None = None
    category_ids: list[int] | None = None  # class index -> COCO category id
    strides: list[int] = [8, 16, 32, 64]  # picodet: one per score/distance output pair

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
    if spec.layout == "picodet":
        boxes, cls_scores = _picodet(outs, i, spec.strides, hw)
    elif spec.layout == "ssd":
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


def _picodet(outs: list[np.ndarray], i: int, strides: list[int], hw: tuple[int, int]):
    """Boxes (x1 y1 x2 y2) and class scores of image ``i`` from PicoDet's per-stride outputs."""
    if len(outs) != 2 * len(strides):
        raise QVisionError(
            f"picodet layout with strides {strides} needs {2 * len(strides)} outputs, "
            f"got {len(outs)}"
        )
    boxes, scores = [], []
    for k, s in enumerate(strides):
        cls, dist = outs[k][i].astype(np.float64), outs[k + len(strides)][i].astype(np.float64)
        rows, cols = -(-hw[0] // s), -(-hw[1] // s)  # ceil: the head pads odd sizes
        if cls.shape[0] != rows * cols or dist.shape[0] != rows * cols or dist.shape[1] % 4:
            raise QVisionError(
                f"picodet output {k} has {cls.shape[0]} points; stride {s} on a "
                f"{hw[0]}x{hw[1]} input gives {rows * cols}"
            )
        bins = dist.reshape(len(dist), 4, -1)
        prob = np.exp(bins - bins.max(axis=2, keepdims=True))
        prob /= prob.sum(axis=2, keepdims=True)
        d = (prob * np.arange(bins.shape[2])).sum(axis=2) * s  # left top right bottom
        yy, xx = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        cx, cy = (xx.ravel() + 0.5) * s, (yy.ravel() + 0.5) * s
        boxes.append(np.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], axis=1))
        scores.append(cls)
    return np.concatenate(boxes), np.concatenate(scores)


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


def reference_truth(images: list[dict], ref_boxes: list, ids: list[int] | None) -> dict:
    """COCO ground truth made of a reference model's confident boxes ((image id, x1 y1 x2 y2
    boxes, class indices) per image), to score another model's detections against it."""
    anns = []
    for image_id, boxes, cls in ref_boxes:
        for b, c in zip(boxes, cls, strict=True):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            if w > 0 and h > 0:
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": image_id,
                        "category_id": int(ids[c] if ids else c),
                        "bbox": [float(b[0]), float(b[1]), w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
    cats = sorted({a["category_id"] for a in anns})
    return {"images": images, "annotations": anns, "categories": [{"id": c} for c in cats]}


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
