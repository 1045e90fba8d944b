"""Accuracy-recovery algorithms. Each refines the float model and/or the plan.

Pre-calibration algorithms change the float model (CLE); post-plan algorithms see the
plan's quantized weights (bias correction, AdaRound). The writer stays the only emitter
of Q/DQ: algorithms only edit float initializers and plan entries.
"""

from __future__ import annotations

from collections.abc import Callable

from qvision.algorithms.context import Context
from qvision.errors import QVisionError


def _bias_correction(ctx: Context) -> Context:
    from qvision.algorithms import bias_correction

    return bias_correction.apply(ctx)


def _weight_mse(ctx: Context) -> Context:
    from qvision.algorithms import weight_ranges

    return weight_ranges.apply(ctx)


def _adaround(ctx: Context) -> Context:
    from qvision.algorithms import adaround

    return adaround.apply(ctx)


# name -> (stage, function); stages run in order: "pre" before calibration, "post" after planning.
ALGORITHMS: dict[str, tuple[str, Callable[[Context], Context]]] = {
    "weight-mse": ("post", _weight_mse),
    "adaround": ("post", _adaround),
    # last, so it corrects the shift of the final (possibly AdaRound) weights
    "bias-correction": ("post", _bias_correction),
}
ORDER = list(ALGORITHMS)


def parse_algos(spec: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Names in run order; 'none' (or empty) means no algorithm."""
    if not spec or spec == "none" or list(spec) == ["none"]:
        return []
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    unknown = [n for n in names if n not in ALGORITHMS]
    if unknown:
        raise QVisionError(f"unknown algorithm '{unknown[0]}'; available: {', '.join(ALGORITHMS)}")
    return sorted(set(names), key=ORDER.index)


__all__ = ["ALGORITHMS", "Context", "parse_algos"]
