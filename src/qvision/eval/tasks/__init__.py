"""Task adapters: decode a model's outputs and score them."""

from qvision.eval.tasks.classification import FidelityMeter, PairedTopOne, TopKMeter, as_logits

__all__ = ["FidelityMeter", "PairedTopOne", "TopKMeter", "as_logits"]
