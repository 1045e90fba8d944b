"""Gather the evidence for a report: latency and energy, sensitivity, activation ranges of
the worst layers, robustness, data checks and provenance, around a quantize + eval run."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from qvision.errors import QVisionError
from qvision.provenance import read_manifest
from qvision.qmath import int_limits
from qvision.report.html import ReportInputs

WORST_LAYERS = 4


def activation_ranges(
    qdq_model: str | Path,
    nodes: list[str],
    calib,
    preprocess,
    threads=None,
    images: int = 8,
    labels: dict[str, str] | None = None,
) -> list[dict]:
    """For each named layer of the QDQ model: a histogram of the float values its input
    quantizer sees on a few calibration images, and the range the grid covers; titled by
    ``labels`` (node name -> readable name) where given."""
    from qvision.data import image_folder, iter_batches
    from qvision.quant.sim import Probe

    model = onnx.load(str(qdq_model))
    by_name = {n.name: n for n in model.graph.node}
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    found = []
    for name in nodes:
        node = by_name.get(name)
        dq = producer.get(node.input[0]) if node is not None else None
        q = (
            producer.get(dq.input[0])
            if dq is not None and dq.op_type == "DequantizeLinear"
            else None
        )
        if q is None or q.op_type != "QuantizeLinear":
            continue
        scale, zp = float(inits[q.input[1]]), inits[q.input[2]]
        qmin, qmax = int_limits(zp.dtype)
        z = int(zp.astype(np.int64))
        lo, hi = (qmin - z) * scale, (qmax - z) * scale
        found.append((name, q.input[0], lo, hi))
    if not found:
        return []
    first = next(i.name for i in model.graph.input if i.name not in inits)
    probe = Probe(
        model, first, [t for _, t, _, _ in found], threads
    )  # as written: Q inputs observable
    ds = image_folder(calib)
    ds.samples = ds.samples[:images]
    values: dict[str, list[np.ndarray]] = {t: [] for _, t, _, _ in found}
    for batch in iter_batches(ds, preprocess, 1):
        outs = probe(batch.inputs)  # the input too: a graph input is no output
        for t in values:
            v = outs[t].ravel()
            values[t].append(v[:: max(1, v.size // 20000)])
    result = []
    for name, t, lo, hi in found:
        v = np.concatenate(values[t])
        edges = np.linspace(min(float(v.min()), lo), max(float(v.max()), hi), 61)
        counts, _ = np.histogram(v, edges)
        result.append(
            {
                "name": f"{(labels or {}).get(name) or name} input",
                "counts": counts,
                "edges": edges,
                "lo": lo,
                "hi": hi,
            }
        )
    return result


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


# The report's measured parts. Fidelity, accuracy, the quantize run's shift check, data
# checks and provenance come with every report (they cost nothing more); these are chosen.
PARTS = ("latency", "sensitivity", "ranges", "robustness", "adversarial")
# the default is bounded: full robustness (27 settings) and attacks cost minutes, so they
# are asked for by name
DEFAULT_PARTS = ("latency", "sensitivity", "ranges")
SENSITIVITY_IMAGES = 8
SENSITIVITY_LAYERS = 16  # the layers adding the most error; each costs a model build


def parse_parts(text: str | None) -> tuple[str, ...]:
    """``--report-parts``: comma-separated names from PARTS, 'default', 'all' or 'none'."""
    if text is None:
        return DEFAULT_PARTS
    chosen: list[str] = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        names = {"all": PARTS, "default": DEFAULT_PARTS, "none": ()}.get(item, (item,))
        for name in names:
            if name not in PARTS:
                raise QVisionError(
                    f"--report-parts: unknown part '{name}'; available: "
                    f"{', '.join(PARTS)}, default, all, none"
                )
            if name not in chosen:
                chosen.append(name)
    return tuple(chosen)


def _quiet(_name: str):
    return nullcontext(None)


def gather(
    model: str | Path,
    quantize_result,
    fp32_eval,
    int8_eval,
    calib: str | Path,
    eval_dir: str | Path,
    task: str,
    preprocess=None,
    threads: int | None = None,
    max_drop: float | None = None,
    robustness_images: int = 200,
    adversarial_images: int = 16,
    bench=None,
    parts: tuple[str, ...] = DEFAULT_PARTS,
    phases=_quiet,
) -> ReportInputs:
    """The report's ``parts`` beyond the quantize and eval results; ``bench`` (FP32, INT8)
    is measured unless a run already has it. ``phases(name)`` gives each part's progress
    callback (a context manager), so progress moves part by part."""
    from qvision import api

    q = quantize_result
    out = q.output
    if "latency" in parts and bench is None:
        with phases("report: latency"):
            bench = api.benchmark(
                [model, out], threads=threads, rounds=5, seconds=1.0, memory=False
            )
    analysis, acts = None, []
    if "sensitivity" in parts or "ranges" in parts:
        with phases("report: sensitivity") as cb:
            # the plan this run wrote (in memory), else the one quantize would make
            analysis = api.analyze(
                model,
                calib,
                preprocess=preprocess,
                target=q.target,
                method=q.method,
                limit=SENSITIVITY_IMAGES,
                threads=threads,
                sensitivity="sensitivity" in parts,
                progress=cb,
                quantized=q,
                top=SENSITIVITY_LAYERS,
            )
    if "ranges" in parts:
        proto, inp = api.open_model(model)
        pre = api.resolve_preprocess(proto, preprocess, inp, model)
        worst = analysis.ranking or [
            r.node
            for r in sorted(
                (r for r in analysis.layers if r.sqnr_db is not None), key=lambda r: r.sqnr_db
            )
        ]
        labels = {lay.node: lay.label for lay in analysis.layers if lay.label}
        acts = activation_ranges(out, worst[:WORST_LAYERS], calib, pre, threads, labels=labels)
    robust = None
    heavy = [p for p in ("robustness", "adversarial") if p in parts]
    if heavy and fp32_eval is not None and fp32_eval.metrics:
        attack = 0
        if "adversarial" in parts and task == "classification" and _has_torch():
            attack = adversarial_images
        with phases(f"report: {' and '.join(heavy)}") as cb:
            robust = api.robustness(
                model,
                out,
                eval_dir,
                task,
                preprocess,
                limit=robustness_images,
                threads=threads,
                progress=cb,
                adversarial_images=attack,
                corruptions=None if "robustness" in parts else [],
            )
    check = api.check_data(calib, eval_dir) if calib is not None else None
    manifest = read_manifest(quantize_result.manifest)
    return ReportInputs(
        quantize=quantize_result,
        fp32_eval=fp32_eval,
        int8_eval=int8_eval,
        bench=bench,
        analysis=analysis if "sensitivity" in parts else None,
        activations=acts,
        robustness=robust,
        data_check=check,
        manifest=manifest,
        max_drop=max_drop,
        parts=parts,
    )
