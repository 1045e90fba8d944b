"""PP-OCRv4 models shipped by rapidocr-onnxruntime, normalized for quantization."""

from __future__ import annotations

from pathlib import Path

import onnx

from qvision.model.load import load_model
from qvision.zoo.sources import package_file

_FILES = {"det": "models/ch_PP-OCRv4_det_infer.onnx", "rec": "models/ch_PP-OCRv4_rec_infer.onnx"}


def model_file(kind: str) -> Path:
    """The shipped file ('det' or 'rec'), or an error naming the package to install."""
    return package_file("rapidocr_onnxruntime", _FILES[kind], "rapidocr-onnxruntime")


def load(kind: str) -> onnx.ModelProto:
    """Loads the model; the loader turns its Constant-node weights into initializers.

    The recognizer's alphabet stays in metadata ``character`` (kept by normalization).
    """
    return load_model(model_file(kind))
