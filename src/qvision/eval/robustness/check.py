"""The quick shift check that ``quantize`` runs: FP32 and INT8 on shifted copies of a
sample of the calibration images, label-free (the task's agreement of INT8 with FP32),
each shift against the clean agreement on the same images.

A shift is named only when INT8 departs from FP32 clearly beyond its clean level: the
agreement falls by more than ``MARGIN`` and the two Wilson intervals, held jointly over
the shifts (Bonferroni), do not overlap. A handful of images resolves only large
departures (the default INT8 text detector reading no dark page), which is what this
check is for; ``qvision robustness`` measures the rest on labelled images.
"""

from __future__ import annotations

import copy
from pathlib import Path

import onnx

from qvision.data import Dataset, Preprocess, iter_batches
from qvision.eval.evaluate import metadata
from qvision.eval.robustness import corrupt
from qvision.eval.tasks.adapters import ADAPTERS
from qvision.intervals import wilson, z_for
from qvision.records import ShiftCheck, ShiftRow
from qvision.runtime.session import make_session

# lighting, contrast, sensor noise, focus, compression, weather: one severity each
QUICK_SHIFTS = (
    ("dark", 3),
    ("bright", 3),
    ("contrast", 3),
    ("gaussian-noise", 2),
    ("defocus-blur", 3),
    ("jpeg", 3),
    ("fog", 2),
)
MARGIN = 0.10  # agreement points (as a share) a shift must cost beyond clean to be named
BATCH = 8


def shift_check(
    fp32: str | Path,
    int8: bytes,
    dataset: Dataset,
    preprocess: Preprocess,
    input_name: str,
    task: str = "classification",
    images: int = 16,
    shifts=QUICK_SHIFTS,
    threads: int | None = None,
) -> ShiftCheck:
    adapter_cls = ADAPTERS[task]
    if task != "classification":  # the task's reader (masks, boxes, line lists) over the folder
        dataset = adapter_cls.open(dataset.root)
    sample = copy.copy(dataset)
    sample.samples = dataset.samples[:images]
    f_sess, q_sess = make_session(fp32, threads), make_session(int8, threads)
    proto = onnx.load(str(fp32), load_external_data=False)
    meta = metadata(proto)
    dim = proto.graph.input[0].type.tensor_type.shape.dim
    fixed = dim[0].dim_value if dim and dim[0].dim_value > 0 else 0

    def agreement(name: str | None, severity: int) -> tuple[float, int]:
        adapter = adapter_cls(meta, [], "calibration", dataset=sample, preprocess=preprocess)
        transform = None if name is None else corrupt(name, severity)
        seen = 0
        for batch in iter_batches(sample, preprocess, fixed or BATCH, transform=transform):
            if fixed and len(batch.samples) != fixed:
                continue  # a fixed-batch model takes full batches only
            feed = {input_name: batch.inputs}
            ref = f_sess.run(None, feed)
            adapter.update(q_sess.run(None, feed), batch.samples, ref)
            seen += len(batch.samples)
        _, agree, _ = adapter.result(True)
        return (agree if agree is not None else 0.0), seen

    clean, n = agreement(None, 0)
    z = z_for(0.95, len(shifts))
    clean_lo = wilson(round(clean * n), n, z)[0]
    rows, named = [], []
    for name, severity in shifts:
        agree, m = agreement(name, severity)
        lo, hi = wilson(round(agree * m), m, z)
        departs = clean - agree > MARGIN and hi < clean_lo
        rows.append(
            ShiftRow(
                shift=name,
                severity=severity,
                agreement=agree,
                agreement_ci=(lo, hi),
                n=m,
                departs=departs,
            )  # fmt: skip
        )
        if departs:
            named.append(f"{name} {severity}")
    warning = None
    if named:
        warning = (
            f"INT8 departs from FP32 under {', '.join(named)} ({adapter_cls.agreement} well "
            f"below its clean {100 * clean:.0f} % on {n} calibration images): its ranges may "
            "not hold for such inputs; calibrate on images like them, or try --method minmax, "
            "and check with qvision robustness"
        )
    return ShiftCheck(
        task=task,
        measure=adapter_cls.agreement,
        images=n,
        clean=clean,
        clean_ci=wilson(round(clean * n), n, z),
        rows=rows,
        warning=warning,
    )
