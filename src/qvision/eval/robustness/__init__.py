"""Robustness: the task metric of a float and a quantized model on corrupted images."""

from __future__ import annotations

import copy
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qvision.errors import QVisionError
from qvision.eval.robustness.corruptions import CORRUPTIONS, SEVERITIES
from qvision.intervals import wilson, z_for


def corrupt(name: str, severity: int, seed: int = 0):
    """``transform(image, index)`` for iter_batches: deterministic per image and setting."""
    fn = CORRUPTIONS[name]
    key = zlib.crc32(name.encode())

    def transform(img, index: int):
        return fn(img, severity, np.random.default_rng([seed, key, severity, index]))

    return transform


@dataclass(frozen=True)
class _Job:
    """What every setting's piece reads, sent once to a cluster: models as paths here or
    bytes (``cluster.ModelFile``) there, the data as a path, the resolved preprocessing."""

    fp32: object
    int8: object
    data: str
    task: str
    preprocess: object
    limit: int | None
    threads: int | None
    z_joint: float


class _Context:
    """A job opened in one process: both sessions, the adapter class and the images."""

    def __init__(self, job: _Job):
        from qvision.cluster import materialize
        from qvision.cluster.files import data_path
        from qvision.eval.evaluate import Runner, metadata, open_task

        fp32, int8 = materialize(job.fp32), materialize(job.int8)
        proto, inp, _, self.adapter_cls, self.dataset = open_task(
            fp32, data_path(job.data), job.task, job.preprocess, job.limit
        )
        self.job, self.meta, self.pre, self.paths = (
            job,
            metadata(proto),
            job.preprocess,
            (fp32, int8),
        )
        self.run_f, self.run_q = Runner(fp32, inp, job.threads), Runner(int8, inp, job.threads)
        self.batch = inp.batch or 32


def score_setting(shared: _Job | _Context, setting: tuple[str, int]):
    """One setting (``("clean", 0)`` or a corruption and severity): both models on the same
    corrupted images, INT8 also scored against FP32; a RobustnessRow."""
    from qvision.cluster import opened
    from qvision.data import iter_batches
    from qvision.eval.tasks.adapters import points_lost
    from qvision.records import RobustnessRow

    ctx = shared if isinstance(shared, _Context) else opened(shared, _Context)
    name, severity = setting
    fp32, int8 = ctx.paths
    common = {"dataset": ctx.dataset, "preprocess": ctx.pre}
    a_f, a_q = (
        ctx.adapter_cls(ctx.meta, [], fp32, **common),
        ctx.adapter_cls(ctx.meta, [], int8, **common),
    )
    transform = None if name == "clean" else corrupt(name, severity)
    seen = 0
    for batch in iter_batches(ctx.dataset, ctx.pre, ctx.batch, transform=transform):
        seen += len(batch.samples)
        outs_f = ctx.run_f(batch.inputs)
        a_f.update(outs_f, batch.samples, None)
        a_q.update(ctx.run_q(batch.inputs), batch.samples, outs_f)
    key, sign = ctx.adapter_cls.primary
    mf, _, _ = a_f.result(False)
    mq, agreement, _ = a_q.result(True)
    paired = getattr(a_q, "paired", None)  # per-image paired outcomes, where defined
    return RobustnessRow(
        corruption=name,
        severity=severity,
        fp32=mf[key],
        int8=mq[key],
        gap=points_lost(mf[key], mq[key], sign),
        agreement=agreement,
        n=seen,
        gap_ci95=paired.interval() if paired is not None else None,
        gap_joint_ci95=(
            paired.interval(ctx.job.z_joint) if paired is not None and name != "clean" else None
        ),
    )


def run_corruptions(
    fp32: str | Path,
    int8: str | Path,
    data: str | Path,
    task: str = "classification",
    preprocess=None,
    corruptions: list[str] | None = None,
    severities: tuple[int, ...] = SEVERITIES,
    limit: int | None = None,
    threads: int | None = None,
    progress=None,
    adversarial_images: int = 0,
    executor=None,
):
    """Both models on the clean images, then on each corruption and severity, one piece of
    work per setting (the same corrupted images for both models) run by ``executor``
    (``cluster.make_executor``; default: this process); INT8 also scored against FP32."""
    from qvision.cluster import LocalExecutor
    from qvision.eval.evaluate import environment, open_task
    from qvision.records import RobustnessResult

    names = list(CORRUPTIONS) if corruptions is None else list(corruptions)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise QVisionError(
            f"unknown corruption '{unknown[0]}'; available: {', '.join(CORRUPTIONS)}"
        )
    if any(s not in SEVERITIES for s in severities):
        raise QVisionError(f"severities are {', '.join(map(str, SEVERITIES))}")
    t0 = time.perf_counter()
    executor = executor or LocalExecutor(threads)
    # checked here, before any piece runs anywhere
    _, _, pre, adapter_cls, dataset = open_task(fp32, data, task, preprocess, limit)
    open_task(int8, data, task, pre, limit)
    if not adapter_cls.has_truth(dataset):
        raise QVisionError(f"images have {adapter_cls.truth}; robustness needs labels", data)
    settings = [("clean", 0)] + [(n, s) for n in names for s in severities]
    job = _Job(
        executor.ship(fp32),
        executor.ship(int8),
        str(Path(data).resolve()),
        task,
        pre,
        limit,
        executor.threads,
        z_for(0.95, len(settings) - 1),
    )
    shared = _Context(job) if executor.name == "local" else job
    rows = executor.map(score_setting, settings, shared, progress)
    adversarial = []
    if adversarial_images:
        ctx = shared if isinstance(shared, _Context) else _Context(job)
        adversarial = _adversarial(
            fp32, int8, ctx.dataset, pre, task, ctx.run_f, ctx.run_q, adversarial_images
        )
    return RobustnessResult(
        task=task,
        metric=adapter_cls.primary[0],
        fp32_model=str(fp32),
        int8_model=str(int8),
        data=str(data),
        images=len(dataset),
        rows=rows,
        adversarial=adversarial,
        seconds=time.perf_counter() - t0,
        env=environment(),
        executor=executor.name,
        workers=executor.workers(),
    )


def _adversarial(fp32, int8, dataset, pre, task, run_f, run_q, images: int):
    from qvision.data import iter_batches
    from qvision.eval.robustness.adversarial import attack
    from qvision.model import load_model
    from qvision.records import AdversarialRow

    if task != "classification":
        raise QVisionError(f"adversarial attacks are implemented for classification, not {task}")
    subset = copy.copy(dataset)
    subset.samples = dataset.samples[:images]
    batches = (
        (b.inputs, np.array([s.label for s in b.samples])) for b in iter_batches(subset, pre, 16)
    )
    rows = attack(
        load_model(fp32),
        load_model(int8),
        lambda x: run_f(x)[0],
        lambda x: run_q(x)[0],
        batches,
        pre,
    )
    keys = (
        "attack",
        "crafted_on",
        "eps",
        "fp32_success",
        "int8_success",
        "fp32_correct",
        "int8_correct",
    )
    out = []
    for r in rows:
        row = AdversarialRow(**dict(zip(keys, r, strict=True)))
        row.fp32_success_ci95 = wilson(round(row.fp32_success * row.fp32_correct), row.fp32_correct)
        row.int8_success_ci95 = wilson(round(row.int8_success * row.int8_correct), row.int8_correct)
        out.append(row)
    return out


__all__ = ["CORRUPTIONS", "SEVERITIES", "corrupt", "run_corruptions"]
