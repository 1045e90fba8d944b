"""Target runtimes as data, and picking one for this machine."""

from __future__ import annotations

import platform

from qvision.errors import QVisionError
from qvision.runtime.machine import cpu_info
from qvision.targets.profiles import TARGETS, Fmt, Target

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def detect() -> tuple[Target, str]:
    """The ORT CPU profile for this machine and a sentence saying why."""
    flags = set(cpu_info()["int8_flags"])
    vnni = sorted(flags & set(VNNI_FLAGS))
    if vnni:
        return TARGETS["ort-cpu-vnni"], f"CPU has {', '.join(vnni)}"
    if platform.machine().lower() in ("aarch64", "arm64"):
        return TARGETS["ort-cpu-vnni"], "ARM CPU (dot-product kernels do not saturate)"
    return TARGETS["ort-cpu-avx2"], "CPU has no VNNI" + (" (AVX2)" if "avx2" in flags else "")


def resolve(name: str) -> tuple[Target, str]:
    if name == "auto":
        target, why = detect()
        return target, f"auto → {target.name} ({why})"
    if name not in TARGETS:
        raise QVisionError(f"unknown target '{name}'; available: auto, {', '.join(TARGETS)}")
    return TARGETS[name], name


__all__ = ["TARGETS", "Fmt", "Target", "detect", "resolve"]
