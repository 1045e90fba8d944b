"""Watching a deployed INT8 model (issue 32): its agreement with the float reference on a
sampled share of the traffic, the saturation of its activation grids, and drift of its
inputs against the calibration images, with alerts."""

from qvision.monitor.watch import Alert, Monitor, Thresholds

__all__ = ["Alert", "Monitor", "Thresholds"]
