"""Per-image agreement of INT8 with FP32, by task: what the monitor averages over a window.

Each scorer takes one image's outputs from both models (batch dimension 1) and gives a
score in [0, 1]: top-1 equal for classification; F1 of confident boxes at IoU 0.5 for
detection and text detection; mean IoU over the classes either mask shows for
segmentation; 1 - CER of INT8's reading against FP32's for OCR recognition. Both sides
are judged in the model's own output space: no mapping back to the original image needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qvision.errors import QVisionError
from qvision.eval.tasks.classification import as_logits
from qvision.eval.tasks.detection import DecodeSpec, box_f1, decode
from qvision.eval.tasks.ocr import alphabet, ctc_greedy, edit_distance
from qvision.eval.tasks.ocr_det import DbSpec, db_boxes, prob_maps
from qvision.eval.tasks.segmentation import label_maps

CONFIDENT = 0.25  # detection score a box must reach to count (as box agreement in eval)

Outputs = list[np.ndarray]


@dataclass(frozen=True)
class Scorer:
    task: str
    label: str  # what the figure means, for people
    binary: bool  # scores are 0 or 1 (a Wilson interval fits)
    score: Callable[[Outputs, Outputs], float]


def _top1(a: Outputs, b: Outputs) -> float:
    return float(np.argmax(as_logits(a[0])) == np.argmax(as_logits(b[0])))


def _mask_iou(a: Outputs, b: Outputs) -> float:
    la, lb = label_maps(a[0])[0], label_maps(b[0])[0]
    ious = []
    for c in np.union1d(np.unique(la), np.unique(lb)):
        ma, mb = la == c, lb == c
        ious.append((ma & mb).sum() / (ma | mb).sum())
    return float(np.mean(ious))


def _detection(spec: DecodeSpec) -> Callable[[Outputs, Outputs], float]:
    def score(a: Outputs, b: Outputs) -> float:
        # normalized boxes stay in 0..1: IoU does not care, both sides share the scale
        ba, sa, ca = decode(a, 0, spec, (1, 1))
        bb, sb, cb = decode(b, 0, spec, (1, 1))
        ka, kb = sa >= CONFIDENT, sb >= CONFIDENT
        return box_f1(ba[ka], ca[ka], bb[kb], cb[kb])

    return score


def _text_boxes(spec: DbSpec) -> Callable[[Outputs, Outputs], float]:
    def score(a: Outputs, b: Outputs) -> float:
        ba, _ = db_boxes(prob_maps(a[0])[0], spec)
        bb, _ = db_boxes(prob_maps(b[0])[0], spec)
        return box_f1(ba, np.zeros(len(ba)), bb, np.zeros(len(bb)))

    return score


def _reading(metadata: dict[str, str], source: str) -> Callable[[Outputs, Outputs], float]:
    table: list[str] = []

    def score(a: Outputs, b: Outputs) -> float:
        if not table:
            table.extend(alphabet(metadata, a[0].shape[-1], source))
        ta, tb = ctc_greedy(a[0], table)[0], ctc_greedy(b[0], table)[0]
        if not tb:
            return float(not ta)
        return max(0.0, 1 - edit_distance(ta, tb) / len(tb))

    return score


TASKS = ("classification", "detection", "segmentation", "ocr-det", "ocr-rec")


def make_scorer(
    task: str | None, metadata: dict[str, str], decoder: dict | None = None, source: str = ""
) -> Scorer:
    """The scorer for ``task`` (None: classification), decoders from the model's metadata."""
    task = task or "classification"
    if task == "classification":
        return Scorer(task, "top-1 agreement", True, _top1)
    if task == "detection":
        spec = DecodeSpec.from_metadata(metadata, decoder)
        return Scorer(task, "box F1 at IoU 0.5", False, _detection(spec))
    if task == "ocr-det":
        return Scorer(
            task, "text box F1 at IoU 0.5", False, _text_boxes(DbSpec.from_options(decoder))
        )
    if task == "segmentation":
        return Scorer(task, "mask IoU", False, _mask_iou)
    if task == "ocr-rec":
        return Scorer(task, "1 - CER against FP32's reading", False, _reading(metadata, source))
    raise QVisionError(f"unknown task '{task}' ({', '.join(TASKS)})")


def mean_interval(values: list[float], binary: bool) -> tuple[float, float]:
    """95 % interval of a window's mean score: Wilson for 0/1 scores, else the normal
    approximation clipped to [0, 1] (scores are bounded, windows hold tens of images)."""
    from qvision.intervals import Z95, wilson

    n = len(values)
    if binary:
        return wilson(int(round(sum(values))), n)
    m = float(np.mean(values))
    if n < 2:
        return (0.0, 1.0)
    half = Z95 * float(np.std(values, ddof=1)) / np.sqrt(n)
    return (max(0.0, m - half), min(1.0, m + half))
