"""What machine we run on: CPU name and the ISA flags that decide INT8 kernels."""

from __future__ import annotations

import os
import platform
from functools import lru_cache

import psutil

# Flags that matter for INT8 kernels (VNNI removes the AVX2 u8s8 saturation problem).
INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "fma")


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and name in ("", platform.machine(), platform.processor()):
                    name = value.strip()
                elif key == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return {
        "name": name,
        "physical_cores": physical_cores(),
        "logical_cores": os.cpu_count() or 1,
        "int8_flags": [f for f in INT8_FLAGS if f in flags],
    }


def physical_cores() -> int:
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def versions() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime

    from qvision.version import __version__

    return {
        "qvision": __version__,
        "python": platform.python_version(),
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
    }
