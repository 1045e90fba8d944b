"""Target runtimes as data, and picking one for this machine."""

from __future__ import annotations

import platform

from qvision.errors import QVisionError
from qvision.runtime.machine import cpu_info
from qvision.targets.profiles import TARGETS, Fmt, Target

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# model metadata where the writer records the plan's target, read back by evaluation
QUANT_METADATA_KEY = "qvision.quantization"


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


def saturation_warning(model_target: str | None, here: Target | None = None) -> str | None:
    """Why figures measured on this CPU can understate a model made for another: on AVX2
    without VNNI, int8 kernels (ONNX Runtime's u8s8, OpenVINO's) add pairs of u8·s8 products
    in 16 bits, which 8-bit weights overflow. A W4A8 MobileNetV2 planned on a VNNI machine
    (8-bit stem and classifier) scored 75.7 % here vs 80.4 % with those two layers at 7 bits."""
    here = here or detect()[0]
    made = TARGETS.get(model_target or "")
    if here.weight_format("conv").bits > 7 or made is None:
        return None
    wide = max(made.weight_format(k).bits for k in ("conv", "gemm", "matmul"))
    if made.activation.dtype != "uint8" or wide <= 7:
        return None
    safe = _safe_profile(made, here)
    return (
        f"model was quantized for {made.name} (8-bit weights); this CPU has no VNNI, where "
        "int8 kernels (ONNX Runtime's u8s8, OpenVINO's) can saturate, so accuracy measured "
        f"here may be lower than on the target (quantize with --target {safe} for this CPU)"
    )


def _safe_profile(made: Target, here: Target) -> str:
    """This CPU's profile if it is for the model's runtime, else the first profile of that
    runtime whose GEMM-backed weights stay within this CPU's bits."""
    if here.runtime == made.runtime:
        return here.name
    bits = here.weight_format("conv").bits
    same = [t for t in TARGETS.values() if t.runtime == made.runtime]
    fits = [t for t in same if t.weight_format("conv").bits <= bits]
    return (fits or same)[0].name


__all__ = ["TARGETS", "Fmt", "Target", "detect", "resolve", "saturation_warning"]
