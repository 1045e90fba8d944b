"""OCR text detection: DB-style probability map -> text boxes -> precision, recall, hmean.

Post-processing follows DB (Liao et al. 2020) as PaddleOCR runs it: threshold the map,
take connected regions, score each by its mean probability, drop small or weak ones and
grow ("unclip") each by ``area * ratio / perimeter``, since the network is trained on
shrunk text kernels. Boxes are axis-aligned (horizontal text); rotated text would need a
minimum-area rectangle. Matching is ICDAR-2015 style: one-to-one at IoU >= 0.5, "don't
care" regions (``###``) neither hits nor misses. Polygon IoU is exact for any ground-truth
polygon against a predicted rectangle (clipping a polygon by a convex one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qvision.errors import QVisionError


@dataclass(frozen=True)
class DbSpec:
    thresh: float = 0.3  # pixel is text
    box_thresh: float = 0.6  # region's mean probability
    unclip_ratio: float = 1.5
    min_size: float = 3.0

    @classmethod
    def from_options(cls, options: dict | None) -> DbSpec:
        options = dict(options or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(options) - known
        if unknown:
            raise QVisionError(
                f"unknown ocr-det decoder setting '{sorted(unknown)[0]}' ({', '.join(sorted(known))})"
            )
        return cls(**{k: float(v) for k, v in options.items()})


def components(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (row0, row1, col0, col1; ends exclusive) of 8-connected regions.

    Works on runs of set pixels per row joined across rows with union-find: the number
    of runs, not of pixels, sets the Python-level cost."""
    runs: list[tuple[int, int, int]] = []  # (row, start, end)
    row_first = []
    for r in range(mask.shape[0]):
        d = np.diff(np.concatenate(([0], mask[r].astype(np.int8), [0])))
        starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
        row_first.append(len(runs))
        runs.extend((r, int(s), int(e)) for s, e in zip(starts, ends, strict=True))
    row_first.append(len(runs))
    parent = list(range(len(runs)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for r in range(1, mask.shape[0]):
        a, a_end = row_first[r - 1], row_first[r]
        b, b_end = row_first[r], row_first[r + 1]
        while a < a_end and b < b_end:
            _, s1, e1 = runs[a]
            _, s2, e2 = runs[b]
            if s1 <= e2 and s2 <= e1:  # overlap or diagonal touch (8-connectivity)
                parent[find(a)] = find(b)
            if e1 < e2:
                a += 1
            else:
                b += 1
    boxes: dict[int, list[int]] = {}
    for i, (r, s, e) in enumerate(runs):
        box = boxes.setdefault(find(i), [r, r + 1, s, e])
        box[0], box[1] = min(box[0], r), max(box[1], r + 1)
        box[2], box[3] = min(box[2], s), max(box[3], e)
    return [tuple(b) for b in boxes.values()]


def db_boxes(prob: np.ndarray, spec: DbSpec) -> tuple[np.ndarray, np.ndarray]:
    """[H, W] probabilities -> boxes [K, 4] (x0, y0, x1, y1, map pixels) and scores [K]."""
    boxes, scores = [], []
    for r0, r1, c0, c1 in components(prob > spec.thresh):
        w, h = c1 - c0, r1 - r0
        if min(w, h) < spec.min_size:
            continue
        score = float(prob[r0:r1, c0:c1].mean())
        if score < spec.box_thresh:
            continue
        d = w * h * spec.unclip_ratio / (2 * (w + h))
        if min(w, h) + 2 * d < spec.min_size + 2:
            continue
        boxes.append([c0 - d, r0 - d, c1 + d, r1 + d])
        scores.append(score)
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64)


def prob_maps(out: np.ndarray) -> np.ndarray:
    """[N, 1, H, W] or [N, H, W] probabilities -> [N, H, W]."""
    if out.ndim == 4 and out.shape[1] == 1:
        return out[:, 0]
    if out.ndim == 3:
        return out
    raise QVisionError(f"ocr-det output has shape {list(out.shape)}, expected [N, 1, H, W]")


def area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2


def clip_to_rect(poly: np.ndarray, rect: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman: the part of ``poly`` inside the axis-aligned ``rect``."""
    x0, y0, x1, y1 = rect
    pts = [tuple(p) for p in poly]
    for axis, bound, keep_above in ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False)):
        if not pts:
            break

        def inside(p, axis=axis, bound=bound, keep_above=keep_above):
            return p[axis] >= bound if keep_above else p[axis] <= bound

        out = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            if inside(cur) != inside(prev):
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                out.append(tuple(prev[k] + t * (cur[k] - prev[k]) for k in (0, 1)))
            if inside(cur):
                out.append(cur)
        pts = out
    return np.asarray(pts, np.float64).reshape(-1, 2)


def iou(poly: np.ndarray, rect: np.ndarray) -> tuple[float, float]:
    """IoU of a polygon and a rectangle, and the intersection area."""
    inter = area(clip_to_rect(poly, rect)) if len(poly) else 0.0
    rect_area = max(0.0, rect[2] - rect[0]) * max(0.0, rect[3] - rect[1])
    union = area(poly) + rect_area - inter
    return (inter / union if union > 0 else 0.0), inter


class HmeanMeter:
    """One-to-one matches at IoU >= ``iou_thresh``, summed over images."""

    def __init__(self, iou_thresh: float = 0.5) -> None:
        self.iou_thresh = iou_thresh
        self.hits = self.preds = self.truths = 0

    def update(self, truth: list[tuple[np.ndarray, bool]], boxes: np.ndarray) -> None:
        care = [p for p, dont in truth if not dont]
        dont_care = [p for p, dont in truth if dont]
        kept = []
        for b in boxes:
            a = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
            if not any(iou(p, b)[1] > 0.5 * a for p in dont_care):  # mostly on a ### region
                kept.append(b)
        pairs = sorted(
            ((iou(p, b)[0], i, j) for i, p in enumerate(care) for j, b in enumerate(kept)),
            reverse=True,
        )
        used_t, used_p = set(), set()
        for v, i, j in pairs:
            if v < self.iou_thresh:
                break
            if i not in used_t and j not in used_p:
                used_t.add(i)
                used_p.add(j)
        self.hits += len(used_t)
        self.preds += len(kept)
        self.truths += len(care)

    def result(self) -> dict[str, float]:
        p = self.hits / self.preds if self.preds else 0.0
        r = self.hits / self.truths if self.truths else 0.0
        return {"precision": p, "recall": r, "hmean": 2 * p * r / (p + r) if p + r else 0.0}


def rect_polygon(b: np.ndarray) -> np.ndarray:
    return np.array([[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]]], np.float64)
