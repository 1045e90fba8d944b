"""Autotuning to an accuracy budget (``--max-drop``).

Trials run cheapest-at-inference first, so the first configuration within the budget is
also about the fastest one found:
1. what costs nothing at inference: the configured (or target's default) calibration
   method and pipeline; the other histogram methods (same statistics, read differently);
   then, with the best method, CLE, MSE weight ranges and AdaRound (when torch is there;
   for sub-8-bit weights also block reconstruction);
2. for sub-8-bit weights, the most sensitive layers raised to the target's native weight
   bits (same kernels on INT8 runtimes; only size grows);
3. the most sensitive layers kept in float, 1, 2, 4, ... of them (each costs speed).
Sensitivity is the model output SQNR with one layer kept float (analysis.keep_float_sqnr).
Calibration runs once; every trial is scored on the tuning images against FP32.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from pathlib import Path

import numpy as np
import onnx

from qvision.cluster import LocalExecutor
from qvision.data import Preprocess, image_folder, iter_batches
from qvision.errors import QVisionError
from qvision.fileio import check_output_path
from qvision.model.graph import GraphView
from qvision.model.ops import is_depthwise
from qvision.quant.analysis.sensitivity import keep_float_sqnr, weight_layers
from qvision.quant.config import QuantConfig
from qvision.quant.pipeline import Planned, finish, make_plan
from qvision.quant.trials import Candidate, Here, Scorer, TuneJob, score_candidate
from qvision.records import QuantizeResult, TuneResult, TuneTrial, ci95_text
from qvision.targets import resolve

SENSITIVITY_IMAGES = 16


def _first(config: QuantConfig, target) -> tuple[str, str]:
    algos = ",".join(config.algos) if isinstance(config.algos, tuple) else config.algos
    algos = algos if algos is not None else ",".join(target.default_algos) or "none"
    return config.method or target.default_method, algos


def _more_algos(algos: str, weights: str = "int8") -> list[str]:
    """Pipelines to try after the first, cheapest first (act-search takes a minute or three);
    AdaRound and (for 4-bit weights, where layer-wise rounding is not enough) block
    reconstruction only with torch."""
    out = ["cle,bias-correction", "weight-mse,bias-correction", "bias-correction,act-search"]
    if importlib.util.find_spec("torch") is not None:
        out.append("adaround,bias-correction")
        if weights != "int8":
            out.append("weight-mse,bias-correction,brecq")
    return [a for a in out if a != algos]


def _steps(n: int, cap: int) -> list[int]:
    out, k = [], 1
    while k < min(n, cap):
        out.append(k)
        k *= 2
    return [*out, min(n, cap)] if n else []


def tune(
    model: str | Path,
    output: str | Path,
    calib: str | Path,
    data: str | Path,
    preprocess: Preprocess,
    config: QuantConfig,
    max_drop: float,
    task: str = "classification",
    time_limit: float = 1800.0,
    images: int | None = None,
    plan_out: str | Path | None = None,
    threads: int | None = None,
    progress=None,
    environment=None,
    proto: onnx.ModelProto | None = None,
    executor=None,
) -> QuantizeResult:
    """Quantize ``model`` with the fastest configuration found whose metric on ``data``
    drops at most ``max_drop`` points; if none does, the most accurate one, and say so."""
    if max_drop < 0:
        raise QVisionError("--max-drop must be >= 0 points")
    t0 = time.perf_counter()
    check_output_path(output, [model, calib, data])
    if config.algos is None:  # the target's cheap pipeline first; slower ones are trials
        config = dataclasses.replace(config, algos=_first(config, resolve(config.target)[0])[1])
    planned = make_plan(
        model,
        calib,
        preprocess,
        config,
        threads=threads,
        progress=progress,
        proto=proto,
        histograms=True,
    )
    fp32_bytes = planned.prepared.SerializeToString()
    scorer = Scorer(fp32_bytes, data, preprocess, planned.input_name, images, threads, task)
    fp32 = scorer.fp32_metric
    fp32_ms = scorer.latency_ms(fp32_bytes)
    executor = executor or LocalExecutor(threads)
    job = TuneJob(
        executor.ship(model),
        str(Path(calib).resolve()),
        str(Path(data).resolve()),
        preprocess,
        config,
        fp32_bytes,
        planned.input_name,
        images,
        executor.threads,
        task,
    )
    width = executor.workers()
    trials: list[TuneTrial] = []
    variants: list[Planned] = []

    def out_of_time() -> bool:
        return time.perf_counter() - t0 > time_limit

    def phase(cands: list[Candidate], base: Planned) -> bool:
        """Score ``cands`` in order, ``width`` at once; True at the first within budget.
        Candidates after it in the same wave are dropped, so the record is the one trial
        by trial would make (and ``speculative`` counts them)."""
        nonlocal speculative
        shared = Here(job, scorer, base) if executor.name == "local" else (job, base)
        for i in range(0, len(cands), width):
            if out_of_time():
                return False
            wave = cands[i : i + width]
            for k, (cand, o) in enumerate(
                zip(wave, executor.map(score_candidate, wave, shared), strict=True)
            ):
                p = o.planned
                if p.statistics is None:  # came back from a worker
                    p = dataclasses.replace(p, statistics=base.statistics, dataset=base.dataset)
                met = scorer.drop(o.metric) <= max_drop + 1e-10
                trials.append(
                    TuneTrial(
                        name=cand.name,
                        algorithms=list(p.plan.algorithms),
                        float_layers=list(cand.floats),
                        wide_layers=dict(cand.wide),
                        metric=o.metric,
                        drop=scorer.drop(o.metric),
                        drop_ci95=o.ci95,
                        agreement=o.agreement,
                        latency_ms=scorer.latency_ms(o.data),  # here, one at a time
                        seconds=o.seconds,
                        met=met,
                    )
                )
                variants.append(p)
                if met:
                    speculative += len(wave) - k - 1
                    return True
        return False

    speculative = 0
    method, algos = _first(config, planned.target)
    others = ("mean-minmax", "mse", "entropy", "percentile")
    met = phase([Candidate(f"{method} ranges, {algos}")], planned)
    if not met:
        cands = [Candidate(f"{o} ranges, {algos}", o, algos) for o in others if o != method]
        met = phase(cands, planned)

    def best(first: int = 0) -> int:
        return max(range(first, len(trials)), key=lambda j: -trials[j].drop)

    method = variants[best()].plan.method
    if not met:
        more = _more_algos(algos, config.weights)
        met = phase([Candidate(f"{method} ranges, {m}", method, m) for m in more], planned)
    best_i = best()
    top = variants[best_i]

    if not met and not out_of_time():
        calib_ds = image_folder(calib)
        calib_ds.samples = calib_ds.samples[:SENSITIVITY_IMAGES]
        batches = [b.inputs for b in iter_batches(calib_ds, preprocess, 8)]
        gains = keep_float_sqnr(top.prepared, top.plan, top.input_name, batches, threads)
        ranked = sorted(gains, key=lambda n: -(gains[n] if gains[n] is not None else np.inf))
        view = GraphView(top.prepared)
        nodes = {n.name: n for n in weight_layers(top.prepared, top.plan)}
        native = {}
        for name in ranked:
            d = top.plan.nodes[name]
            bits = top.target.weight_format(d.kind, is_depthwise(nodes[name], view)).bits
            if bits > top.plan.weights[nodes[name].input[1]].bits:
                native[name] = bits
        order = [n for n in ranked if n in native]
        steps = _steps(len(order), len(order))
        cands = [
            Candidate(
                f"{k} most sensitive layers at native weight bits",
                wide=tuple((n, native[n]) for n in order[:k]),
            )
            for k in steps
        ]
        first_wide = len(trials)
        met = phase(cands, top)
        wide: dict[str, int] = {}
        if len(trials) > first_wide:
            wi = best(best_i)
            wide = trials[wi].wide_layers if trials[wi].drop <= trials[best_i].drop else {}
        if not met:
            cands = [
                Candidate(
                    f"{k} most sensitive layers kept float",
                    floats=tuple(ranked[:k]),
                    wide=tuple(wide.items()),
                )
                for k in _steps(len(ranked), max(1, len(ranked) // 2))
            ]
            met = phase(cands, top)

    chosen = next((i for i, t in enumerate(trials) if t.met), None)
    if chosen is None:
        chosen = best()
        c = trials[chosen]
        message = (
            f"budget of {max_drop:g} points not met in {len(trials)} trials"
            f"{' (time limit reached)' if out_of_time() else ''}; "
            f"best: {c.name}, drop {c.drop:.2f}{ci95_text(c.drop_ci95)} points"
        )
    else:
        c = trials[chosen]
        message = (
            f"budget met by '{c.name}': drop {c.drop:.2f}{ci95_text(c.drop_ci95)} "
            f"<= {max_drop:g} points"
        )
    result = finish(
        variants[chosen], model, output, None, plan_out, config, threads, environment, t0
    )
    result.tuning = TuneResult(
        task=task,
        metric=scorer.key if scorer.labelled else scorer.adapter.agreement_key(),
        images=scorer.images,
        max_drop=max_drop,
        fp32_metric=fp32,
        fp32_latency_ms=fp32_ms,
        met=trials[chosen].met,
        chosen=chosen,
        message=message,
        trials=trials,
        seconds=time.perf_counter() - t0,
        executor=executor.name,
        workers=width,
        speculative=speculative,
    )
    if not trials[chosen].met:
        result.warnings.append(message)
    return result
