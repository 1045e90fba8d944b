"""ONNX Runtime sessions, latency/throughput/memory benchmarks, machine facts."""

from qvision.runtime.machine import cpu_info, physical_cores, versions
from qvision.runtime.session import make_session

__all__ = ["cpu_info", "make_session", "physical_cores", "versions"]
