"""Semantic segmentation: per-pixel labels from model outputs, mapped back to each original
image, scored with a confusion matrix (IoU per class, mIoU, pixel accuracy)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from qvision.errors import QVisionError

# a model's ``qvision.segmentation`` metadata: {"threshold": t} for one-channel outputs
METADATA_KEY = "qvision.segmentation"


def label_maps(out: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """[N, C, H, W] scores -> [N, H, W] class ids; [N, H, W] (or [N, 1, H, W]) ids pass through;
    one float channel is foreground above ``threshold`` (0 for a logit; a probability map
    such as a text detector's takes its own, DB's 0.3)."""
    if out.ndim == 4 and out.shape[1] == 1:
        out = out[:, 0] if np.issubdtype(out.dtype, np.integer) else (out[:, 0] > threshold)
    if out.ndim == 3:
        return out.astype(np.int64)
    if out.ndim != 4:
        raise QVisionError(
            f"segmentation output has shape {list(out.shape)}, expected [N, C, H, W]"
        )
    return out.argmax(axis=1)


def _resize_nearest(labels: np.ndarray, width: int, height: int) -> np.ndarray:
    if labels.shape == (height, width):
        return labels
    img = Image.fromarray(labels.astype(np.int32), mode="I")
    return np.asarray(img.resize((width, height), Image.Resampling.NEAREST), dtype=np.int64)


def to_original(labels: np.ndarray, preprocess, width: int, height: int) -> np.ndarray:
    """A label map at the model's output size -> the original image's [height, width].

    Outputs smaller than the input (stride-8 heads) are first scaled to the input; the
    letterbox padding (bottom/right) is cut off before scaling back."""
    if preprocess.crop is not None or preprocess.resize_mode not in ("letterbox", "exact"):
        if preprocess.resize is not None or preprocess.crop is not None:
            raise QVisionError(
                "segmentation needs resize_mode 'letterbox' or 'exact' without a crop "
                "(or no resize at all) in the preprocessing"
            )
        return _resize_nearest(labels, width, height)
    th, tw = (
        preprocess.resize
        if isinstance(preprocess.resize, tuple | list)
        else (preprocess.resize,) * 2
    )
    labels = _resize_nearest(labels, tw, th)
    if preprocess.resize_mode == "letterbox":
        r = min(th / height, tw / width)
        labels = labels[: max(1, round(height * r)), : max(1, round(width * r))]
    return _resize_nearest(labels, width, height)


class ConfusionMeter:
    """Pixel confusion matrix, truth x prediction; grows with the largest class id seen."""

    def __init__(self, classes: int = 0, ignore_index: int = 255) -> None:
        self.m = np.zeros((classes, classes), dtype=np.int64)
        self.ignore = ignore_index

    def update(self, pred: np.ndarray, truth: np.ndarray) -> None:
        if pred.shape != truth.shape:
            raise ValueError(f"prediction {pred.shape} vs mask {truth.shape}")
        keep = truth != self.ignore
        t, p = truth[keep].astype(np.int64), pred[keep].astype(np.int64)
        if t.size == 0:
            return
        k = max(self.m.shape[0], int(t.max()) + 1, int(p.max()) + 1)
        if k > self.m.shape[0]:
            grown = np.zeros((k, k), dtype=np.int64)
            n = self.m.shape[0]
            grown[:n, :n] = self.m
            self.m = grown
        self.m += np.bincount(t * k + p, minlength=k * k).reshape(k, k)

    @property
    def pixels(self) -> int:
        return int(self.m.sum())

    def iou(self) -> np.ndarray:
        """IoU per class; NaN for classes absent from both truth and prediction."""
        tp = np.diag(self.m).astype(np.float64)
        union = self.m.sum(axis=0) + self.m.sum(axis=1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def result(self, names: list[str] | None = None, per_class_up_to: int = 30) -> dict:
        if not self.pixels:
            return {}
        iou = self.iou()
        tp = np.diag(self.m)
        truth = self.m.sum(axis=1)
        present = truth > 0
        out = {
            "miou": float(np.nanmean(iou)),
            "pixel_accuracy": float(tp.sum() / self.pixels),
            "mean_class_accuracy": float((tp[present] / truth[present]).mean()),
        }
        if len(iou) <= per_class_up_to:
            for i, v in enumerate(iou):
                if not np.isnan(v):
                    label = names[i] if names and i < len(names) else str(i)
                    out[f"iou:{label}"] = float(v)
        return out
