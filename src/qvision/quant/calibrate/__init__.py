"""Calibration: stream images through the float model and observe activation ranges."""

from qvision.quant.calibrate.collector import collect, float_tensors, plan_chunks
from qvision.quant.calibrate.observers import (
    METHODS,
    HistogramObserver,
    MinMaxObserver,
    make_observer,
)

__all__ = [
    "METHODS",
    "HistogramObserver",
    "MinMaxObserver",
    "collect",
    "float_tensors",
    "make_observer",
    "plan_chunks",
]
