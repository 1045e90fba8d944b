"""Load, validate and normalize ONNX models; a small graph view for later stages."""

from qvision.model.graph import GraphView
from qvision.model.load import (
    ImageInput,
    image_input,
    load_model,
    normalize_model,
    save_model,
)

__all__ = ["GraphView", "ImageInput", "image_input", "load_model", "normalize_model", "save_model"]
