"""The quick shift check that ``quantize`` runs: FP32 and INT8 on shifted copies of a
sample of the calibration images, label-free (the task's agreement of INT8 with FP32),
each shift against the clean agreement on the same images.

With several INT8 candidates (``shift_check(fp32, {name: bytes, ...})``) FP32 runs once per
batch and each candidate is checked on the same tensors; ``quantize`` uses that to choose
calibration ranges that hold under shifts (quant/shiftsafe.py).

A shift is named only when INT8 departs from FP32 clearly beyond its clean level: the
agreement falls by more than ``MARGIN`` and the two Wilson intervals, held jointly over
the shifts (Bonferroni), do not overlap. A handful of images resolves only large
departures (the default INT8 text detector reading no dark page), which is what this
check is for; ``qvision robustness`` measures the rest on labelled images.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import onnx

from qvision.data import Dataset, Preprocess, iter_batches
from qvision.eval.evaluate import metadata
from qvision.eval.robustness import corrupt
from qvision.eval.tasks.adapters import ADAPTERS
from qvision.intervals import wilson, z_for
from qvision.model.load import fixed_batch
from qvision.qmath import OutputError, sqnr_db
from qvision.records import ShiftCheck, ShiftRow
from qvision.runtime.session import make_session

# lighting, contrast and focus (one severity each): the shifts that moved activations out
# of the calibrated ranges; sensor noise, JPEG and fog, never seen to part INT8 from FP32
# by more than 2.3 points (BENCHMARKS.md), are left to qvision robustness to keep
# quantize quick
QUICK_SHIFTS = (
    ("dark", 3),
    ("bright", 3),
    ("contrast", 3),
    ("defocus-blur", 3),
)
MARGIN = 0.10  # agreement points (as a share) a shift must cost beyond clean to be named
MARGIN_DB = 10.0  # without a task: output SQNR a shift must cost beyond clean
BATCH = 8
# images by default: 16 at 224x224, fewer as each costs more (quantize stays within twice
# its time without the check), never under 4. Agreement resolves an INT8 that fails every
# shifted image from 8 images on; with fewer, the SQNR column still shows it
IMAGES, MIN_IMAGES, PIXELS = 16, 4, 224 * 224


def _pixels(preprocess: Preprocess) -> int:
    size = preprocess.crop or preprocess.resize or 224
    h, w = (size, size) if isinstance(size, int) else size
    return max(h * w, 1)


def check_size(preprocess: Preprocess) -> int:
    """How many images the check takes by default for inputs of this size."""
    return max(MIN_IMAGES, min(IMAGES, round(IMAGES * PIXELS / _pixels(preprocess))))


def shift_check(
    fp32: str | Path,
    int8: bytes | dict[str, bytes],
    dataset: Dataset,
    preprocess: Preprocess,
    input_name: str,
    task: str | None = "classification",
    images: int = 16,
    shifts=QUICK_SHIFTS,
    threads: int | None = None,
) -> ShiftCheck | dict[str, ShiftCheck]:
    """The check of one INT8 model (bytes), or of each candidate (a dict of bytes). With no
    task, only the outputs' SQNR against FP32 is measured (any model)."""
    candidates = int8 if isinstance(int8, dict) else {"int8": int8}
    adapter_cls = ADAPTERS[task] if task else None
    if adapter_cls and task != "classification":  # the task's reader over the folder
        dataset = adapter_cls.open(dataset.root)
    sample = copy.copy(dataset)
    sample.samples = dataset.samples[:images]
    f_sess = make_session(fp32, threads)
    q_sess = {k: make_session(v, threads) for k, v in candidates.items()}
    proto = onnx.load(str(fp32), load_external_data=False)
    meta = metadata(proto)
    fixed = fixed_batch(proto.graph.input[0])

    def measure(name: str | None, severity: int) -> tuple[dict, int]:
        """{candidate: (agreement, output SQNR dB)} on the sample under one shift."""
        adapters = {
            k: adapter_cls(meta, [], "calibration", dataset=sample, preprocess=preprocess)
            for k in candidates
            if adapter_cls
        }
        errors = {k: OutputError() for k in candidates}
        transform = None if name is None else corrupt(name, severity)
        seen = 0
        for batch in iter_batches(sample, preprocess, fixed or BATCH, transform=transform):
            if fixed and len(batch.samples) != fixed:
                continue  # a fixed-batch model takes full batches only
            feed = {input_name: batch.inputs}
            ref = f_sess.run(None, feed)
            for k, sess in q_sess.items():
                got = sess.run(None, feed)
                for r, g in zip(ref, got, strict=True):
                    errors[k].update(r, g)
                if k in adapters:
                    adapters[k].update(got, batch.samples, ref)
            seen += len(batch.samples)
        out = {}
        for k, e in errors.items():
            agree = adapters[k].result(True)[1] if k in adapters else None
            if k in adapters and agree is None:
                agree = 0.0
            out[k] = (agree, sqnr_db(e.signal, e.noise))
        return out, seen

    clean, n = measure(None, 0)
    shifted = [(name, severity, *measure(name, severity)) for name, severity in shifts]
    what = adapter_cls.agreement if adapter_cls else "output SQNR"
    checks = {
        k: _judge(what, task, clean[k], n, [(a, b, c[k], m) for a, b, c, m in shifted])
        for k in candidates
    }
    return checks if isinstance(int8, dict) else checks["int8"]


def _judge(measure: str, task: str | None, clean, n: int, shifted) -> ShiftCheck:
    """Each shift against the clean images; the shifts that clearly depart: by agreement
    when the task is known, else by output SQNR."""
    (clean_agree, clean_sqnr), z = clean, z_for(0.95, len(shifted))
    by_agreement = clean_agree is not None
    clean_ci = wilson(round(clean_agree * n), n, z) if by_agreement else None
    rows, named = [], []
    for name, severity, (agree, sqnr), m in shifted:
        ci = wilson(round(agree * m), m, z) if by_agreement else None
        if by_agreement:
            departs = clean_agree - agree > MARGIN and ci[1] < clean_ci[0]
        else:
            departs = _db(clean_sqnr) - _db(sqnr) > MARGIN_DB
        rows.append(
            ShiftRow(
                shift=name,
                severity=severity,
                agreement=agree,
                agreement_ci=ci,
                n=m,
                departs=departs,
                sqnr_db=sqnr,
            )  # fmt: skip
        )
        if departs:
            named.append(f"{name} {severity}")
    warning = None
    if named:
        level = (
            f"{measure} well below its clean {100 * clean_agree:.0f} %"
            if by_agreement
            else f"output SQNR over {MARGIN_DB:.0f} dB below its clean {_db(clean_sqnr):.1f} dB"
        )
        warning = (
            f"INT8 departs from FP32 under {', '.join(named)} ({level} on {n} calibration "
            "images): its ranges may not hold for such inputs; calibrate on images like "
            "them and check with qvision robustness"
        )
    return ShiftCheck(
        task=task,
        measure=measure,
        images=n,
        clean=clean_agree,
        clean_ci=clean_ci,
        clean_sqnr_db=clean_sqnr,
        rows=rows,
        warning=warning,
    )


def _db(v: float | None) -> float:
    return math.inf if v is None else v
