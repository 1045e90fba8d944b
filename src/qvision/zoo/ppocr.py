"""PP-OCRv4 models shipped by rapidocr-onnxruntime, normalized for quantization."""

from __future__ import annotations

import onnx

from qvision.model.load import load_model
from qvision.zoo.sources import package_file

_FILES = {"det": "models/ch_PP-OCRv4_det_infer.onnx", "rec": "models/ch_PP-OCRv4_rec_infer.onnx"}


def load(kind: str) -> onnx.ModelProto:
    """Loads the model; the loader turns its Constant-node weights into initializers.

    The recognizer's alphabet stays in metadata ``character`` (kept by normalization).
    """
    path = package_file("rapidocr_onnxruntime", _FILES[kind], "rapidocr-onnxruntime")
    return load_model(path)
