"""Accuracy-recovery algorithms. Each refines the float model and/or the plan.

Pre-calibration algorithms change the float model (CLE); post-plan algorithms see the
plan's quantized weights (bias correction, AdaRound). The writer stays the only emitter
of Q/DQ: algorithms only edit float initializers and plan entries.

Every algorithm is a module with an ``Options`` model and ``apply(ctx, options) -> Change``;
``run`` parses its options, times it and returns an ``AlgorithmResult``.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qvision.errors import QVisionError
from qvision.quant.algorithms.base import Change, Options, parse_options
from qvision.quant.algorithms.context import Context
from qvision.records import AlgorithmResult


@dataclass(frozen=True)
class Algorithm:
    name: str
    stage: str  # "pre": the float model, before calibration, data-free; "post": the plan
    module: str  # imported when used (torch-backed ones import torch there)
    function: str = "apply"
    images: bool = False  # reads the calibration images (ctx.dataset)

    def load(self):
        return importlib.import_module(f"qvision.quant.algorithms.{self.module}")

    def options(self, raw: Mapping[str, Any] | None = None) -> Options:
        return parse_options(self.name, self.load().Options, raw or {})

    def statistics(self, model, nodes: dict) -> dict:
        """Its statistic points on the float model (tensor -> new observer), if it declares
        any (a module-level ``statistics(model, nodes)``), so calibration gathers them too."""
        declare = getattr(self.load(), "statistics", None)
        return declare(model, nodes) if declare else {}


# The order is the run order: "pre" before calibration, "post" after planning.
ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm("cle", "pre", "cle"),
        Algorithm("cle-relu", "pre", "cle", "apply_relu"),
        Algorithm("weight-mse", "post", "weight_ranges"),
        Algorithm("adaround", "post", "adaround", images=True),
        # data-free: E[x] from BatchNorm statistics; the empirical one below overrides it
        Algorithm("bias-correction-analytical", "post", "bias_correction", "apply_analytical"),
        # after AdaRound, so it corrects the shift of the final (learned) rounding
        Algorithm("bias-correction", "post", "bias_correction", images=True),
        # block reconstruction learns rounding and biases from where the others left them
        Algorithm("brecq", "post", "brecq", images=True),
        # quantization-aware training: every weight, step and bias at once, from the plan
        # the others left (they are its starting point)
        Algorithm("qat", "post", "qat", images=True),
        # last: activation grids for the output error of the final weights and biases
        Algorithm("act-search", "post", "act_search", images=True),
    )
}
ORDER = list(ALGORITHMS)


def parse_algos(
    spec: str | list[str] | tuple[str, ...] | None, default: list[str] | None = None
) -> list[str]:
    """Names in run order; 'none' (or empty) means no algorithm; 'default' stands for the
    target's pipeline (``default``), so 'default,qat' trains from it."""
    if not spec or spec == "none" or list(spec) == ["none"]:
        return []
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if "default" in names:
        if default is None:  # checked before the target is known: the name is fine
            names = [n for n in names if n != "default"]
        else:
            names = [*default, *(n for n in names if n != "default")]
    unknown = [n for n in names if n not in ALGORITHMS]
    if unknown:
        raise QVisionError(f"unknown algorithm '{unknown[0]}'; available: {', '.join(ALGORITHMS)}")
    names = sorted(set(names), key=ORDER.index)
    if "cle" in names and "cle-relu" in names:
        raise QVisionError("choose one of 'cle' and 'cle-relu'")
    return names


def check_options(options: Mapping[str, Mapping[str, Any]]) -> dict[str, Options]:
    """Every algorithm's options parsed, before any work: one line for the first problem."""
    for name in options:
        if name not in ALGORITHMS:
            raise QVisionError(f"--algo-option names unknown algorithm '{name}'")
    return {name: ALGORITHMS[name].options(raw) for name, raw in options.items()}


def stage(names: list[str], which: str) -> list[str]:
    return [n for n in names if ALGORITHMS[n].stage == which]


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    """PyTorch's threads for a trained algorithm = ``threads``: its reductions, and so its
    last bits, depend on the thread count; a cluster task then matches a local run at the
    same ``--threads``."""
    torch = sys.modules.get("torch")  # loaded by the algorithm's module if it trains
    if torch is None or not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(name: str, ctx: Context) -> AlgorithmResult:
    """Run one algorithm on ``ctx`` (it edits ``ctx.model``'s initializers and ``ctx.plan``);
    its one-line message also goes to ``ctx.log``."""
    algo = ALGORITHMS[name]
    options = algo.options(ctx.options.get(name))
    if algo.images and ctx.dataset is None:
        raise QVisionError(f"{name} needs calibration images (--calib)")
    t0 = time.perf_counter()
    fn = getattr(algo.load(), algo.function)
    with _torch_threads(ctx.threads):
        change: Change = fn(ctx, options)
    seconds = time.perf_counter() - t0
    ctx.log.append(change.message)
    return AlgorithmResult(
        name=name,
        stage=algo.stage,
        options=options.model_dump(),
        unit=change.unit,
        changed=change.changed,
        of=change.of,
        error=change.error,
        error_before=change.error_before,
        error_after=change.error_after,
        details=change.details,
        seconds=seconds,
        message=change.message,
    )


__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "Change",
    "Context",
    "Options",
    "check_options",
    "parse_algos",
    "run",
    "stage",
]
