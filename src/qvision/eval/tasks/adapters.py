"""Task adapters: what ``evaluate`` needs from a task, one small class per task.

An adapter sees each batch's model outputs (and a reference model's, for fidelity), keeps
running meters, and at the end gives the metrics, the agreement figure and the fidelity
statistics. ``evaluate`` only loads, batches and runs; adding a task means adding an
adapter here (ORT's one-handler-per-op idea, applied to tasks).
"""

from __future__ import annotations

import numpy as np

from qvision.errors import QVisionError
from qvision.eval.tasks import ocr_det
from qvision.eval.tasks.classification import FidelityMeter, PairedTopOne, TopKMeter, as_logits
from qvision.eval.tasks.detection import (
    REFERENCE_SCORE,
    DecodeSpec,
    box_agreement,
    coco_map,
    decode,
    reference_truth,
    to_original,
)
from qvision.eval.tasks.harm import HarmMeter
from qvision.eval.tasks.ocr import METADATA_KEY as OCR_KEY
from qvision.eval.tasks.ocr import PairedCer, TextMeter, alphabet, ctc_greedy, read_alphabet
from qvision.eval.tasks.ocr_det import DbSpec, HmeanMeter, db_boxes
from qvision.eval.tasks.segmentation import ConfusionMeter, label_maps
from qvision.eval.tasks.segmentation import to_original as mask_to_original
from qvision.intervals import wilson


def _per_step(out: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[..., C] outputs as [rows, C] score vectors (time steps, anchors) for FidelityMeter."""
    c = out.shape[-1]
    return out.reshape(-1, c).astype(np.float64), ref.reshape(-1, c).astype(np.float64)


def _top5(logits: np.ndarray) -> list[list[tuple[int, float]]]:
    x = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(x)
    p /= p.sum(axis=1, keepdims=True)
    idx = np.argsort(-p, axis=1, kind="stable")[:, :5]
    return [[(int(i), float(row[i])) for i in ids] for ids, row in zip(idx, p, strict=True)]


def points_lost(reference: float, value: float, sign: int) -> float:
    """Points ``value`` is worse than ``reference`` for a metric whose better direction is
    ``sign`` (+1: higher is better, as top-1; -1: lower is better, as CER)."""
    return 100 * sign * (reference - value)


class _Adapter:
    agreement = "agreement"
    per_group = False  # takes a --groups CSV (per-group harm against a reference)

    @classmethod
    def agreement_key(cls) -> str:
        """The agreement label as a JSON-friendly name: 'top-1 agreement' -> top1_agreement."""
        return cls.agreement.replace("-", "").replace(" ", "_")


class Classification(_Adapter):
    primary = ("top1", 1)  # the metric autotune budgets, and +1 if higher is better
    agreement = "top-1 agreement"  # what ``result``'s agreement figure measures
    truth = "no labels (no class folders)"
    per_group = True

    @staticmethod
    def open(data):
        from qvision.data import open_dataset

        return open_dataset(data)

    def __init__(
        self, metadata, names, source, keep=False, dataset=None, preprocess=None, groups=None, **_
    ):
        self.topk, self.fid, self.paired = TopKMeter(), FidelityMeter(), PairedTopOne()
        self.names, self.source, self.keep = names, source, keep
        self.classes = list(getattr(dataset, "classes", None) or [])
        self.harm_meter = HarmMeter(groups)
        self.outputs = 0  # class scores per image, from the first batch
        self.labelled = True
        self.predictions: list[tuple[str, list[tuple[int, float]], list[str]]] = []

    @staticmethod
    def has_truth(dataset) -> bool:
        return dataset.labelled

    def update(self, outs: list[np.ndarray], samples, refs: list | None) -> None:
        logits, ref = as_logits(outs[0]), None if refs is None else refs[0]
        if all(s.label is not None for s in samples):
            labels = np.array([s.label for s in samples])
            if labels.max() >= logits.shape[1]:
                raise QVisionError(
                    f"label {int(labels.max())} is outside the model's {logits.shape[1]} outputs",
                    self.source,
                )
            self.topk.update(logits, labels)
            if ref is not None:
                self.paired.update(logits, ref, labels)
                self.harm_meter.update(logits, ref, labels, [s.path for s in samples])
                self.outputs = logits.shape[1]
        else:
            self.labelled = False
        if ref is not None:
            self.fid.update(logits, ref)
        if self.keep:
            for s, top in zip(samples, _top5(logits), strict=True):
                n = self.names if len(self.names) == logits.shape[1] else []
                self.predictions.append((str(s.path), top, [n[i] for i, _ in top] if n else []))

    def intervals(self) -> dict[str, tuple[float, float]]:
        return self.topk.intervals() if self.labelled else {}

    def name_of(self, index: int) -> str:
        """The model's class name, else the data's (a WordNet id), else the index."""
        if self.names and len(self.names) == self.outputs:
            return self.names[index]
        return self.classes[index] if index < len(self.classes) else str(index)

    def harm(self):
        """Per-class and per-group harm against the reference (None: no labels or no reference)."""
        if not self.labelled or not self.harm_meter.classes:
            return None
        return self.harm_meter.result(self.name_of)

    def result(self, with_reference: bool):
        fidelity = self.fid.result() if with_reference else None
        metrics = self.topk.result() if self.labelled and self.topk.n else {}
        if fidelity is not None:
            # over images (for ocr-rec, per-step agreement's steps are not independent)
            fidelity["top1_agreement_ci95"] = wilson(self.fid.agree, self.fid.n)
        if fidelity is not None and metrics:
            fidelity.update(self.paired.result())
        return metrics, (fidelity["top1_agreement"] if fidelity else None), fidelity


class OcrRecognition(_Adapter):
    """CER and exact match of CTC-decoded lines; with a reference, the share of lines read
    identically, the CER against the reference's reading and per-step score fidelity."""

    primary = ("cer", -1)  # the metric autotune budgets, and +1 if higher is better
    agreement = "line agreement"  # what ``result``'s agreement figure measures
    truth = "no labels.txt of text lines"
    open = Classification.open

    def __init__(
        self, metadata, names, source, keep=False, dataset=None, preprocess=None, **options
    ):
        self.metadata, self.source = metadata, source
        if options.get("alphabet"):  # a dictionary file given for a model without one
            self.metadata = {**metadata, OCR_KEY: read_alphabet(options["alphabet"])}
            self.source = str(options["alphabet"])
        self.table: list[str] | None = None  # from the first output's class count
        self.truth_meter, self.ref_meter = TextMeter(), TextMeter()
        self.paired = PairedCer()
        self.labelled = True
        self.fid = FidelityMeter()
        self.predictions: list = []

    @staticmethod
    def has_truth(dataset) -> bool:
        return dataset.has_text

    def update(self, outs: list[np.ndarray], samples, refs: list | None) -> None:
        out = outs[0]
        if self.table is None:
            self.table = alphabet(self.metadata, out.shape[-1], self.source)
        texts = ctc_greedy(out, self.table)
        truth = [s.text for s in samples]
        if all(t is not None for t in truth):
            self.truth_meter.update(texts, truth)
        else:
            self.labelled = False
        if refs is not None:
            ref_texts = ctc_greedy(refs[0], self.table)
            self.ref_meter.update(texts, ref_texts)
            self.fid.update(*_per_step(out, refs[0]))
            if self.labelled:
                self.paired.update(texts, ref_texts, truth)

    def result(self, with_reference: bool):
        metrics = self.truth_meter.result() if self.labelled and self.truth_meter.n else {}
        agreement = None
        if self.ref_meter.n:
            r = self.ref_meter.result()
            metrics["cer_vs_reference"] = r["cer"]
            agreement = r["exact_match"]
        fidelity = self.fid.result() if with_reference else None
        if fidelity is not None and metrics:
            fidelity.update(self.paired.result())
        return metrics, agreement, fidelity


def _coco_boxes(image_id, boxes, scores, cls, ids) -> list[dict]:
    """Decoded boxes (x1, y1, x2, y2) as COCO results (x, y, w, h) of one image."""
    return [
        {
            "image_id": image_id,
            "category_id": int(ids[c] if ids else c),
            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
            "score": float(s),
        }
        for b, s, c in zip(boxes, scores, cls, strict=True)
    ]


class Detection(_Adapter):
    """COCO mAP of decoded, NMS-filtered boxes mapped back to each original image."""

    primary = ("map", 1)  # the metric autotune budgets, and +1 if higher is better
    agreement = "box agreement"  # what ``result``'s agreement figure measures
    truth = "no annotations.json (COCO) or names.txt (YOLO)"

    @staticmethod
    def open(data):
        from qvision.data.coco import open_detection

        dataset, det = open_detection(data)
        dataset.annotations = det
        return dataset

    def __init__(
        self, metadata, names, source, keep=False, dataset=None, preprocess=None, decoder=None, **_
    ):
        self.spec = DecodeSpec.from_metadata(metadata, decoder)
        self.gt = dataset.annotations.gt
        self.sizes = {im["id"]: (im["width"], im["height"]) for im in self.gt["images"]}
        self.preprocess = preprocess
        self.hw = (
            preprocess.resize
            if isinstance(preprocess.resize, tuple | list)
            else (preprocess.resize,) * 2
        )
        self.detections: list[dict] = []
        self.ref_detections: list[dict] = []  # the reference's, for per-class AP
        self.categories = {c["id"]: c.get("name", str(c["id"])) for c in self.gt["categories"]}
        self.pairs: list = []  # (model, reference) confident boxes per image, for agreement
        self.ref_boxes: list = []  # (image id, boxes, classes): the reference's confident boxes
        self.fid = FidelityMeter()
        self.predictions: list = []
        self.warnings = dataset.annotations.warnings()

    @staticmethod
    def has_truth(dataset) -> bool:
        ann = getattr(dataset, "annotations", None)
        return bool(ann) and getattr(ann, "labelled", True)

    def _boxes(self, outs, i, sample):
        boxes, scores, cls = decode(outs, i, self.spec, self.hw)
        w, h = self.sizes[sample.image_id]
        return to_original(boxes, self.preprocess, w, h), scores, cls

    def update(self, outs: list[np.ndarray], samples, refs: list | None) -> None:
        ids = self.spec.category_ids
        for i, sample in enumerate(samples):
            boxes, scores, cls = self._boxes(outs, i, sample)
            self.detections.extend(_coco_boxes(sample.image_id, boxes, scores, cls, ids))
            if refs is not None:
                rb, rs, rc = self._boxes(refs, i, sample)
                sure = rs >= REFERENCE_SCORE
                self.ref_detections.extend(_coco_boxes(sample.image_id, rb, rs, rc, ids))
                self.pairs.append(
                    (
                        (boxes[scores >= REFERENCE_SCORE], cls[scores >= REFERENCE_SCORE]),
                        (rb[sure], rc[sure]),
                    )
                )
                self.ref_boxes.append((sample.image_id, rb[sure], rc[sure]))
        if refs is not None:
            for o, r in zip(outs, refs, strict=True):
                self.fid.update(*_per_step(o, r))

    def class_ap(self):
        """Per-category AP against the reference (None: no annotations or no reference)."""
        if not self.gt["annotations"] or not self.pairs:
            return None
        from qvision.eval.tasks.class_ap import class_ap_harm

        return class_ap_harm(
            self.gt,
            self.ref_detections,
            self.detections,
            lambda c: self.categories.get(c, str(c)),
        )

    def result(self, with_reference: bool):
        metrics = coco_map(self.gt, self.detections) if self.gt["annotations"] else {}
        agreement = None
        if with_reference:
            agreement = box_agreement([a for a, _ in self.pairs], [b for _, b in self.pairs])
            # label-free: the model's mAP with the reference's confident boxes as the truth
            ids = self.spec.category_ids
            truth = reference_truth(self.gt["images"], self.ref_boxes, ids)
            if truth["annotations"]:
                vs = coco_map(truth, self.detections)
                metrics["map_vs_reference"], metrics["map50_vs_reference"] = vs["map"], vs["map50"]
        return metrics, agreement, (self.fid.result() if with_reference else None)


class Segmentation(_Adapter):
    """mIoU, pixel accuracy and IoU per class at each original mask's size; with a reference,
    the share of pixels labelled alike (at the model's output size) and per-pixel score fidelity."""

    primary = ("miou", 1)  # the metric autotune budgets, and +1 if higher is better
    agreement = "pixel agreement"  # what ``result``'s agreement figure measures
    truth = "no masks (JPEGImages/ + SegmentationClass/, or images/ + masks/)"

    @staticmethod
    def open(data):
        from qvision.data.segmentation import open_segmentation

        return open_segmentation(data)

    def __init__(self, metadata, names, source, keep=False, dataset=None, preprocess=None, **_):
        masks = dataset.annotations
        self.meter = ConfusionMeter(ignore_index=masks.ignore_index)
        self.names = masks.classes or names
        self.preprocess, self.problems = preprocess, masks
        self.agree = self.pixels = 0
        self.fid = FidelityMeter()
        self.predictions: list = []
        self.threshold = _threshold(metadata)

    @staticmethod
    def has_truth(dataset) -> bool:
        return all(s.mask is not None for s in dataset.samples)

    @property
    def warnings(self) -> list[str]:
        return self.problems.warnings()

    def update(self, outs: list[np.ndarray], samples, refs: list | None) -> None:
        from qvision.data.images import load_mask

        labels = label_maps(outs[0], self.threshold)
        for lab, sample in zip(labels, samples, strict=True):
            try:
                truth = load_mask(sample.mask)
            except QVisionError as exc:
                self.problems.note("unreadable mask", f"{sample.mask.name}: {exc.problem}")
                continue
            h, w = truth.shape
            self.meter.update(mask_to_original(lab, self.preprocess, w, h), truth)
        if refs is not None:
            ref = label_maps(refs[0], self.threshold)
            self.agree += int((ref == labels).sum())
            self.pixels += labels.size
            if (
                outs[0].ndim == 4 and outs[0].shape[1] > 1
            ):  # scores: sample pixels, about 4k an image
                hw = outs[0].shape[2] * outs[0].shape[3]
                step = max(1, int(np.sqrt(hw / 4096)))
                o, r = (x[:, :, ::step, ::step].transpose(0, 2, 3, 1) for x in (outs[0], refs[0]))
                self.fid.update(*_per_step(o, r))

    def result(self, with_reference: bool):
        metrics = self.meter.result(self.names)
        agreement = self.agree / self.pixels if self.pixels else None
        fidelity = self.fid.result() if with_reference and self.fid.n else None
        return metrics, agreement, fidelity


class OcrDetection(_Adapter):
    """Precision, recall and hmean (IoU 0.5, ICDAR style) of DB boxes mapped back to each
    original image; with a reference, the hmean of the model's boxes against the
    reference's (agreement) and per-image probability-map fidelity."""

    primary = ("hmean", 1)  # the metric autotune budgets, and +1 if higher is better
    agreement = "box agreement"  # what ``result``'s agreement figure measures
    truth = "no labels.txt with PaddleOCR detection regions"

    @staticmethod
    def open(data):
        from qvision.data.text_regions import open_text_regions

        return open_text_regions(data)

    def __init__(
        self, metadata, names, source, keep=False, dataset=None, preprocess=None, decoder=None, **_
    ):
        self.spec = DbSpec.from_options(decoder)
        self.preprocess, self.regions = preprocess, dataset.annotations
        self.hw = preprocess.output_hw()
        self.meter, self.agree = HmeanMeter(), HmeanMeter()
        self.fid = FidelityMeter()
        self.predictions: list = []

    @staticmethod
    def has_truth(dataset) -> bool:
        return bool(getattr(dataset, "annotations", None))

    @property
    def warnings(self) -> list[str]:
        return self.regions.warnings()

    def _boxes(self, prob: np.ndarray, sample) -> np.ndarray:
        from qvision.data.images import image_size

        boxes, _ = db_boxes(prob, self.spec)
        if self.hw is not None:  # maps smaller than the input (strided heads)
            sy, sx = self.hw[0] / prob.shape[0], self.hw[1] / prob.shape[1]
            boxes = boxes * np.array([sx, sy, sx, sy])
        w, h = image_size(sample.path)
        return to_original(boxes, self.preprocess, w, h)

    def update(self, outs: list[np.ndarray], samples, refs: list | None) -> None:
        maps = ocr_det.prob_maps(outs[0])
        ref_maps = None if refs is None else ocr_det.prob_maps(refs[0])
        for i, sample in enumerate(samples):
            boxes = self._boxes(maps[i], sample)
            self.meter.update(self.regions.regions[sample.image_id], boxes)
            if ref_maps is not None:
                ref = self._boxes(ref_maps[i], sample)
                self.agree.update([(ocr_det.rect_polygon(b), False) for b in ref], boxes)
        if ref_maps is not None:
            step = max(1, int(np.sqrt(maps[0].size / 4096)))
            self.fid.update(
                maps[:, ::step, ::step].reshape(len(maps), -1).astype(np.float64),
                ref_maps[:, ::step, ::step].reshape(len(maps), -1).astype(np.float64),
            )

    def result(self, with_reference: bool):
        metrics = self.meter.result() if self.meter.truths else {}
        agreement = self.agree.result()["hmean"] if with_reference else None
        return metrics, agreement, (self.fid.result() if with_reference else None)


ADAPTERS = {
    "classification": Classification,
    "ocr-rec": OcrRecognition,
    "detection": Detection,
    "segmentation": Segmentation,
    "ocr-det": OcrDetection,
}


def guess_task(model, task: str | None = None) -> str | None:
    """The task that reads ``model``'s outputs: the given one, the model's metadata, or
    classification when the first output looks like class scores; else None."""
    from qvision.data.preprocess import TASK_KEY

    if task:
        return task
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get(TASK_KEY):
        return meta[TASK_KEY]
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) == 2 or (len(dims) == 4 and all(d.dim_value == 1 for d in dims[2:])):
        return "classification"
    return None


def _threshold(metadata: dict) -> float:
    """Foreground threshold of a one-channel output: the model's segmentation metadata,
    else a DB text detector's pixel threshold (its map is a probability), else 0 (a logit)."""
    import json

    from qvision.data.preprocess import TASK_KEY
    from qvision.eval.tasks.segmentation import METADATA_KEY as SEG_KEY

    if SEG_KEY in metadata:
        try:
            return float(json.loads(metadata[SEG_KEY])["threshold"])
        except (ValueError, KeyError, TypeError):
            raise QVisionError(f"invalid '{SEG_KEY}' metadata: {metadata[SEG_KEY][:60]}") from None
    return DbSpec.thresh if metadata.get(TASK_KEY) == "ocr-det" else 0.0
