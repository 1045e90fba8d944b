"""Autotune's trials as pieces of work: a candidate (a calibration method and pipeline, or
the phase's best plan with layers widened or kept float) built, written and scored against
FP32 where an executor puts it. Locally the driver's scorer is used; on a cluster each
worker process opens its own once (the float outputs computed there)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qvision.data import Preprocess, iter_batches
from qvision.errors import QVisionError
from qvision.eval.evaluate import Comparison
from qvision.eval.tasks.adapters import points_lost
from qvision.model.graph import GraphView
from qvision.qmath import QFormat
from qvision.quant.config import QuantConfig
from qvision.quant.constraints import weight_spec
from qvision.quant.pipeline import Planned, make_plan, write_model
from qvision.quant.plan import NodePlan
from qvision.runtime.session import make_session


class Scorer:
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


@dataclass(frozen=True)
class Candidate:
    """One trial: the phase's base plan as it is, a method and pipeline planned from the
    base's statistics, or the base with layers at wider weights or kept float."""

    name: str
    method: str | None = None
    algos: str | None = None
    floats: tuple[str, ...] = ()
    wide: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class TuneJob:
    """What every trial reads: the model as a path here or bytes there, folders as paths."""

    model: object
    calib: str
    data: str
    preprocess: Preprocess
    config: QuantConfig
    fp32: bytes  # the prepared float model the trials are scored against
    input_name: str
    images: int | None
    threads: int | None
    task: str


@dataclass
class Outcome:
    planned: Planned  # without statistics and images (the driver has them)
    data: bytes
    metric: float
    agreement: float | None
    ci95: float | None
    seconds: float


@dataclass
class Here:
    """The shared value when trials run in this process: the driver's own scorer."""

    job: TuneJob
    scorer: Scorer
    base: Planned


def variant(planned: Planned, floats, wide: dict[str, int]) -> Planned:
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


def build(job: TuneJob, base: Planned, cand: Candidate, model: str | Path) -> Planned:
    if cand.method is not None:
        cfg = dataclasses.replace(job.config, method=cand.method, algos=cand.algos)
        return make_plan(
            model, job.calib, job.preprocess, cfg, threads=job.threads, statistics=base.statistics
        )
    if cand.floats or cand.wide:
        return variant(base, list(cand.floats), dict(cand.wide))
    return base


def _open_scorer(job: TuneJob) -> Scorer:
    from qvision.cluster.files import data_path

    data = str(data_path(job.data))
    return Scorer(job.fp32, data, job.preprocess, job.input_name, job.images, job.threads, job.task)


def score_candidate(shared: Here | tuple[TuneJob, Planned], cand: Candidate) -> Outcome:
    """Build ``cand``, write it and score it (what ``Executor.map`` runs per trial)."""
    from qvision.cluster import materialize, opened

    started = time.perf_counter()
    if isinstance(shared, Here):
        job, scorer, base = shared.job, shared.scorer, shared.base
    else:
        job, base = shared
        scorer = opened(job, _open_scorer)
    p = build(job, base, cand, materialize(job.model))
    data = write_model(p, job.threads)
    metric, agreement, ci95 = scorer.score(data)
    if not isinstance(shared, Here):  # the driver has these; do not send them back
        p = dataclasses.replace(p, statistics=None, dataset=None)
    return Outcome(p, data, metric, agreement, ci95, time.perf_counter() - started)
