"""Where quantization error comes from: per-layer error and sensitivity ranking."""

from qvision.quant.analysis.sensitivity import analyze

__all__ = ["analyze"]
