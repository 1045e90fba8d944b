"""Task adapters: decode a model's outputs and score them."""

from qvision.tasks.classification import FidelityMeter, TopKMeter, as_logits

TASKS = (
    "classification",
    "ocr-rec",
    "detection",
    "segmentation",
)  # keys of tasks.adapters.ADAPTERS

__all__ = ["TASKS", "FidelityMeter", "TopKMeter", "as_logits"]
