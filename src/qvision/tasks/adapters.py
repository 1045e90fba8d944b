"""Task adapters: what ``evaluate`` needs from a task, one small class per task.

An adapter sees each batch's model outputs (and a reference model's, for fidelity), keeps
running meters, and at the end gives the metrics, the agreement figure and the fidelity
statistics. ``evaluate`` only loads, batches and runs; adding a task means adding an
adapter here (ORT's one-handler-per-op idea, applied to tasks).
"""

from __future__ import annotations

import numpy as np

from qvision.errors import QVisionError
from qvision.tasks.classification import FidelityMeter, TopKMeter, as_logits
from qvision.tasks.ocr import OcrReader


def _top5(logits: np.ndarray) -> list[list[tuple[int, float]]]:
    x = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(x)
    p /= p.sum(axis=1, keepdims=True)
    idx = np.argsort(-p, axis=1, kind="stable")[:, :5]
    return [[(int(i), float(row[i])) for i in ids] for ids, row in zip(idx, p, strict=True)]


class Classification:
    truth = "labels (no class folders)"

    def __init__(self, metadata: dict[str, str], names: list[str], source, keep: bool = False):
        self.topk, self.fid = TopKMeter(), FidelityMeter()
        self.names, self.source, self.keep = names, source, keep
        self.labelled = True
        self.predictions: list[tuple[str, list[tuple[int, float]], list[str]]] = []

    @staticmethod
    def has_truth(dataset) -> bool:
        return dataset.labelled

    def update(self, out: np.ndarray, samples, ref: np.ndarray | None) -> None:
        logits = as_logits(out)
        if all(s.label is not None for s in samples):
            labels = np.array([s.label for s in samples])
            if labels.max() >= logits.shape[1]:
                raise QVisionError(
                    f"label {int(labels.max())} is outside the model's {logits.shape[1]} outputs",
                    self.source,
                )
            self.topk.update(logits, labels)
        else:
            self.labelled = False
        if ref is not None:
            self.fid.update(logits, ref)
        if self.keep:
            for s, top in zip(samples, _top5(logits), strict=True):
                n = self.names if len(self.names) == logits.shape[1] else []
                self.predictions.append((str(s.path), top, [n[i] for i, _ in top] if n else []))

    def result(self, with_reference: bool):
        fidelity = self.fid.result() if with_reference else None
        metrics = self.topk.result() if self.labelled and self.topk.n else {}
        return metrics, (fidelity["top1_agreement"] if fidelity else None), fidelity


class OcrRecognition:
    truth = "no labels.txt of text lines"

    def __init__(self, metadata: dict[str, str], names: list[str], source, keep: bool = False):
        self.metadata, self.source = metadata, source
        self.reader: OcrReader | None = None
        self.fid = FidelityMeter()
        self.predictions: list = []

    @staticmethod
    def has_truth(dataset) -> bool:
        return dataset.has_text

    def update(self, out: np.ndarray, samples, ref: np.ndarray | None) -> None:
        if self.reader is None:
            self.reader = OcrReader(self.metadata, out.shape[-1], self.source)
        self.reader.update(out, samples, ref)
        if ref is not None:
            self.fid.update(*self.reader.last_pair)  # per time step class scores

    def result(self, with_reference: bool):
        metrics = self.reader.result() if self.reader else {}
        agreement = metrics.pop("line_agreement", None)
        return metrics, agreement, (self.fid.result() if with_reference else None)


ADAPTERS = {"classification": Classification, "ocr-rec": OcrRecognition}
