"""Accuracy-recovery algorithms. Each refines the float model and/or the plan.

Pre-calibration algorithms change the float model (CLE); post-plan algorithms see the
plan's quantized weights (bias correction, AdaRound). The writer stays the only emitter
of Q/DQ: algorithms only edit float initializers and plan entries.
"""

from __future__ import annotations

from collections.abc import Callable

from qvision.errors import QVisionError
from qvision.quant.algorithms.context import Context


def _bias_correction(ctx: Context) -> Context:
    from qvision.quant.algorithms import bias_correction

    return bias_correction.apply(ctx)


def _weight_mse(ctx: Context) -> Context:
    from qvision.quant.algorithms import weight_ranges

    return weight_ranges.apply(ctx)


def _cle(ctx: Context) -> Context:
    from qvision.quant.algorithms import cle

    return cle.apply(ctx)


def _cle_relu(ctx: Context) -> Context:
    from qvision.quant.algorithms import cle

    return cle.apply(ctx, relax_relu6=True)


def _bias_correction_analytical(ctx: Context) -> Context:
    from qvision.quant.algorithms import bias_correction

    return bias_correction.apply_analytical(ctx)


def _adaround(ctx: Context) -> Context:
    from qvision.quant.algorithms import adaround

    return adaround.apply(ctx)


def _act_search(ctx: Context) -> Context:
    from qvision.quant.algorithms import act_search

    return act_search.apply(ctx)


def _brecq(ctx: Context) -> Context:
    from qvision.quant.algorithms import brecq

    return brecq.apply(ctx)


# name -> (stage, function); stages run in order: "pre" before calibration, "post" after planning.
ALGORITHMS: dict[str, tuple[str, Callable[[Context], Context]]] = {
    "cle": ("pre", _cle),
    "cle-relu": ("pre", _cle_relu),
    "weight-mse": ("post", _weight_mse),
    "adaround": ("post", _adaround),
    # data-free: E[x] from BatchNorm statistics; the empirical one below overrides it
    "bias-correction-analytical": ("post", _bias_correction_analytical),
    # after AdaRound, so it corrects the shift of the final (learned) rounding
    "bias-correction": ("post", _bias_correction),
    # block reconstruction learns rounding and biases from where the others left them
    "brecq": ("post", _brecq),
    # last: activation grids for the output error of the final weights and biases
    "act-search": ("post", _act_search),
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
    names = sorted(set(names), key=ORDER.index)
    if "cle" in names and "cle-relu" in names:
        raise QVisionError("choose one of 'cle' and 'cle-relu'")
    return names


def stage(names: list[str], which: str) -> list[str]:
    return [n for n in names if ALGORITHMS[n][0] == which]


__all__ = ["ALGORITHMS", "Context", "parse_algos", "stage"]
