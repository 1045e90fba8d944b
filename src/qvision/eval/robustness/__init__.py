"""Robustness: the task metric of a float and a quantized model on corrupted images."""

from __future__ import annotations

import copy
import time
import zlib
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
):
    """Both models on the clean images, then on each corruption and severity, in one pass
    per setting (the same corrupted images for both); INT8 also scored against FP32."""
    from qvision.data import iter_batches
    from qvision.eval.evaluate import Runner, environment, metadata, open_task
    from qvision.eval.tasks.adapters import points_lost
    from qvision.records import RobustnessResult, RobustnessRow

    names = list(CORRUPTIONS) if corruptions is None else list(corruptions)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise QVisionError(
            f"unknown corruption '{unknown[0]}'; available: {', '.join(CORRUPTIONS)}"
        )
    if any(s not in SEVERITIES for s in severities):
        raise QVisionError(f"severities are {', '.join(map(str, SEVERITIES))}")
    t0 = time.perf_counter()
    proto, inp, pre, adapter_cls, dataset = open_task(fp32, data, task, preprocess, limit)
    if not adapter_cls.has_truth(dataset):
        raise QVisionError(f"images have {adapter_cls.truth}; robustness needs labels", data)
    key, sign = adapter_cls.primary
    run_f, run_q = Runner(fp32, inp, threads), Runner(int8, inp, threads)
    meta = metadata(proto)
    settings = [("clean", 0)] + [(n, s) for n in names for s in severities]
    z_joint = z_for(0.95, len(settings) - 1)
    rows = []
    for k, (name, severity) in enumerate(settings):
        a_f = adapter_cls(meta, [], fp32, dataset=dataset, preprocess=pre)
        a_q = adapter_cls(meta, [], int8, dataset=dataset, preprocess=pre)
        transform = None if name == "clean" else corrupt(name, severity)
        seen = 0
        for batch in iter_batches(dataset, pre, inp.batch or 32, transform=transform):
            seen += len(batch.samples)
            outs_f = run_f(batch.inputs)
            a_f.update(outs_f, batch.samples, None)
            a_q.update(run_q(batch.inputs), batch.samples, outs_f)
        mf, _, _ = a_f.result(False)
        mq, agreement, _ = a_q.result(True)
        paired = getattr(a_q, "paired", None)  # per-image paired outcomes, where defined
        rows.append(
            RobustnessRow(
                corruption=name,
                severity=severity,
                fp32=mf[key],
                int8=mq[key],
                gap=points_lost(mf[key], mq[key], sign),
                agreement=agreement,
                n=seen,
                gap_ci95=paired.interval() if paired is not None else None,
                gap_joint_ci95=(
                    paired.interval(z_joint) if paired is not None and name != "clean" else None
                ),
            )
        )
        if progress:
            progress(k + 1, len(settings))
    adversarial = []
    if adversarial_images:
        adversarial = _adversarial(fp32, int8, dataset, pre, task, run_f, run_q, adversarial_images)
    return RobustnessResult(
        task=task,
        metric=key,
        fp32_model=str(fp32),
        int8_model=str(int8),
        data=str(data),
        images=len(dataset),
        rows=rows,
        adversarial=adversarial,
        seconds=time.perf_counter() - t0,
        env=environment(),
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
