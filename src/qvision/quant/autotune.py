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

from qvision.data import Preprocess, image_folder, iter_batches
from qvision.errors import QVisionError
from qvision.eval.evaluate import Comparison
from qvision.eval.tasks.adapters import points_lost
from qvision.fileio import check_output_path
from qvision.model.graph import GraphView
from qvision.model.ops import is_depthwise
from qvision.qmath import QFormat
from qvision.quant.analysis.sensitivity import keep_float_sqnr, weight_layers
from qvision.quant.config import QuantConfig
from qvision.quant.constraints import weight_spec
from qvision.quant.pipeline import Planned, finish, make_plan, write_model
from qvision.quant.plan import NodePlan
from qvision.records import QuantizeResult, TuneResult, TuneTrial, ci95_text
from qvision.runtime.session import make_session
from qvision.targets import resolve

SENSITIVITY_IMAGES = 16


class _Scorer:
    """A model's task metric on the tuning images (agreement with FP32 when unlabelled),
    scored by the evaluation API's loop against FP32's outputs computed once."""

    def __init__(
        self, fp32: bytes, data, preprocess: Preprocess, input_name: str, limit, threads, task
    ):
        self.compare = Comparison(fp32, data, task, preprocess, input_name, limit, threads)
        self.adapter, self.labelled = self.compare.adapter, self.compare.labelled
        self.input, self.threads = input_name, threads
        self.key, self.sign = self.adapter.primary if self.labelled else ("agreement", 1)
        self.fp32_metric, _, _ = self.score(fp32)
        self.images = self.compare.images
        if not self.images:
            raise QVisionError("none of the tuning images could be read", data)
        self.sample = next(iter_batches(self.compare.dataset, preprocess, 1)).inputs

    def score(self, data: bytes) -> tuple[float, float | None, float | None]:
        """(metric, agreement with FP32, 95 % half-width of the top-1 drop paired against
        FP32 on these images: classification with labels only)."""
        metrics, agreement, fid = self.compare.score(data)
        metric = agreement if self.key == "agreement" else metrics[self.key]
        return metric, agreement, (fid or {}).get("drop_ci95_points")

    def drop(self, metric: float) -> float:
        """Points lost against FP32 (CER rising counts as a drop)."""
        return points_lost(self.fp32_metric, metric, self.sign)

    def latency_ms(self, data: bytes, runs: int = 50) -> float:
        sess = make_session(data, self.threads)
        for _ in range(3):
            sess.run(None, {self.input: self.sample})
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            sess.run(None, {self.input: self.sample})
            times.append(time.perf_counter() - t)
        return float(np.median(times) * 1e3)


def _variant(planned: Planned, floats: list[str], wide: dict[str, int]) -> Planned:
    """The plan with ``wide`` layers' weights re-gridded and ``floats`` layers left float."""
    plan = planned.plan.model_copy(deep=True)
    view = GraphView(planned.prepared)
    nodes = {n.name: n for n in planned.prepared.graph.node}
    for name, bits in wide.items():
        wname = nodes[name].input[1]
        spec = plan.weights[wname]
        dtype = "int8" if spec.dtype == "int4" and bits > 4 else spec.dtype  # packed int4 holds 4
        fmt = QFormat(dtype, bits, spec.symmetric, planned.target.narrow(bits))
        plan.weights[wname] = weight_spec(view.weight(wname), fmt, spec.axis)
        plan.weight_rounding.pop(wname, None)  # learned for the old grid
        plan.weight_grid.pop(wname, None)
        plan.biases.pop(name, None)  # corrected the old grid's shift
    for name in floats:
        plan.nodes[name] = NodePlan(
            op_type=nodes[name].op_type, action="float", reason="kept float by autotune"
        )
    return dataclasses.replace(planned, plan=plan)


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
    scorer = _Scorer(fp32_bytes, data, preprocess, planned.input_name, images, threads, task)
    fp32 = scorer.fp32_metric
    fp32_ms = scorer.latency_ms(fp32_bytes)
    trials: list[TuneTrial] = []
    variants: list[Planned] = []

    def trial(name: str, build, floats=(), wide=None) -> bool:
        """Build a plan variant (``build()``), score it and record it; True if within budget."""
        started = time.perf_counter()
        p = build()
        data_bytes = write_model(p, threads)
        metric, agree, ci95 = scorer.score(data_bytes)
        met = scorer.drop(metric) <= max_drop + 1e-10
        trials.append(
            TuneTrial(
                name=name,
                algorithms=list(p.plan.algorithms),
                float_layers=list(floats),
                wide_layers=dict(wide or {}),
                metric=metric,
                drop=scorer.drop(metric),
                drop_ci95=ci95,
                agreement=agree,
                latency_ms=scorer.latency_ms(data_bytes),
                seconds=time.perf_counter() - started,
                met=met,
            )
        )
        variants.append(p)
        return met

    def out_of_time() -> bool:
        return time.perf_counter() - t0 > time_limit

    def plan_with(method: str, algos: str):
        cfg = dataclasses.replace(config, method=method, algos=algos)
        return lambda: make_plan(
            model,
            calib,
            preprocess,
            cfg,
            threads=threads,
            proto=proto,
            statistics=planned.statistics,
        )

    method, algos = _first(config, planned.target)
    met = trial(f"{method} ranges, {algos}", lambda: planned)
    for other in ("mean-minmax", "mse", "entropy", "percentile"):
        if met or out_of_time() or other == method:
            continue
        met = trial(f"{other} ranges, {algos}", plan_with(other, algos))

    def best(first: int = 0) -> int:
        return max(range(first, len(trials)), key=lambda j: -trials[j].drop)

    method = variants[best()].plan.method
    for more in _more_algos(algos, config.weights):
        if met or out_of_time():
            break
        met = trial(f"{method} ranges, {more}", plan_with(method, more))
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
        wide: dict[str, int] = {}
        order = [n for n in ranked if n in native]
        for k in _steps(len(order), len(order)):
            if met or out_of_time():
                break
            wide = {n: native[n] for n in order[:k]}
            met = trial(
                f"{k} most sensitive layers at native weight bits",
                lambda w=wide: _variant(top, [], w),
                wide=wide,
            )
        if wide:
            wi = best(best_i)
            wide = trials[wi].wide_layers if trials[wi].drop <= trials[best_i].drop else {}
        for k in _steps(len(ranked), max(1, len(ranked) // 2)):
            if met or out_of_time():
                break
            floats = ranked[:k]
            met = trial(
                f"{k} most sensitive layers kept float",
                lambda f=floats: _variant(top, f, wide),
                floats=floats,
                wide=wide,
            )

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
    )
    if not trials[chosen].met:
        result.warnings.append(message)
    return result
