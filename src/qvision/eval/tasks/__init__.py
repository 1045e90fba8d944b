"""Task adapters: decode a model's outputs and score them."""

from qvision.eval.tasks.classification import FidelityMeter, PairedTopOne, TopKMeter, as_logits

# keys of tasks.adapters.ADAPTERS
TASKS = ("classification", "detection", "segmentation", "ocr-rec", "ocr-det")

__all__ = ["TASKS", "FidelityMeter", "PairedTopOne", "TopKMeter", "as_logits"]
