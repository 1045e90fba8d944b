"""qvision: quantize computer-vision ONNX models, with evidence."""

from qvision.errors import QVisionError
from qvision.version import __version__

__all__ = [
    "QVisionError",
    "QuantConfig",
    "TuneOptions",
    "__version__",
    "analyze",
    "benchmark",
    "evaluate",
    "export_zoo_model",
    "load_model",
    "quantize",
]


def __getattr__(name: str):
    # The API pulls in onnxruntime; keep `import qvision` cheap until it is used.
    if name in {"analyze", "benchmark", "evaluate", "export_zoo_model", "load_model", "quantize"}:
        from qvision import api

        return getattr(api, name)
    if name in {"QuantConfig", "TuneOptions"}:
        from qvision.quant import config

        return getattr(config, name)
    raise AttributeError(name)
