"""Per-layer analysis of a quantization plan.

1. Accumulated error: every quantized layer's output in the QDQ model vs the float model
   (SQNR, cosine) on the same images.
2. Sensitivity: the model's output SQNR when that one layer is kept float, everything
   else quantized; the gain over the fully quantized model ranks the layers worth
   keeping at higher precision.
"""

from __future__ import annotations

import time

import numpy as np

from qvision.data import Preprocess, image_folder, iter_batches
from qvision.data.datasets import LoadReport, first_readable
from qvision.errors import QVisionError
from qvision.model.names import layer_labels
from qvision.qmath import OutputError, sqnr_db
from qvision.quant.config import QuantConfig
from qvision.quant.pipeline import Planned, plan_shift_safe
from qvision.quant.plan import NodePlan
from qvision.quant.sim import Reference, Simulator
from qvision.records import AnalyzeResult, LayerReport, SkippedFile

OPTIMIZE = True  # compare ORT's fused integer kernels


def _batches(images, preprocess: Preprocess, limit: int) -> tuple[list[np.ndarray], list]:
    """The first ``limit`` readable images in batches, and the unreadable files passed over."""
    ds, passed_over = first_readable(image_folder(images), limit)
    report = LoadReport()
    batches = [b.inputs for b in iter_batches(ds, preprocess, batch_size=8, report=report)]
    return batches, passed_over + report.skipped


def weight_layers(prepared, plan) -> list:
    """Quantized nodes with a quantized weight: the candidates for higher precision."""
    return [
        n
        for n in prepared.graph.node
        if (d := plan.nodes.get(n.name)) is not None
        and d.action == "quantize"
        and n.input[1:2]
        and n.input[1] in plan.weights
    ]


def keep_float_sqnr(
    prepared,
    plan,
    input_name: str,
    batches,
    threads=None,
    progress=None,
    ref: Reference | None = None,
    only: set[str] | None = None,
) -> dict[str, float | None]:
    """Model output SQNR with each weight layer (or each named in ``only``) kept float in
    turn, run with the kernels ONNX Runtime deploys."""
    sim = Simulator(prepared, input_name, threads)
    ref = ref or sim.reference(batches)
    layers = [n for n in weight_layers(prepared, plan) if only is None or n.name in only]
    gains: dict[str, float | None] = {}
    for i, node in enumerate(layers):
        # a shallow copy: only this node's entry changes (a deep copy per layer cost seconds)
        kept = NodePlan(op_type=node.op_type, action="float", reason="analysis")
        variant = plan.model_copy(update={"nodes": {**plan.nodes, node.name: kept}})
        (e,) = sim.output_errors(variant, ref, outputs=[0], optimize=OPTIMIZE)
        gains[node.name] = sqnr_db(e.signal, e.noise)
        if progress:
            progress(i + 1, len(layers))
    return gains


def _adding_most(layers, errs: dict[str, OutputError], top: int) -> list[str]:
    """The ``top`` layers whose own quantization adds the most error: relative noise power
    at the output less that at the input (0 where the input is not measured, e.g. the
    image); accumulated error alone would rank by depth."""

    def relative(t: str) -> float:
        e = errs.get(t)
        return e.noise / max(e.signal, 1e-30) if e is not None else 0.0

    added = {n.name: relative(n.output[0]) - relative(n.input[0]) for n in layers}
    return sorted(added, key=lambda k: -added[k])[:top]


def analyze(
    model,
    calib,
    preprocess: Preprocess,
    images=None,
    config: QuantConfig | None = None,
    limit: int = 32,
    threads: int | None = None,
    sensitivity: bool = True,
    progress=None,
    environment=None,
    proto=None,
    planned: Planned | None = None,
    top: int | None = None,
) -> AnalyzeResult:
    """Per-layer error and sensitivity of ``planned`` (a plan already made, e.g. the one a
    quantize run wrote), else of the plan quantize would make. ``top``: measure the
    sensitivity of only that many weight layers, those adding the most error themselves
    (each one costs a model build and a run; the report asks for 16)."""
    t0 = time.perf_counter()
    choice = None
    if planned is None:
        # the plan quantize would write, its calibration method chosen the same way
        chosen = plan_shift_safe(
            model, calib, preprocess, config or QuantConfig(), threads=threads, proto=proto
        )
        planned, choice = chosen.planned, chosen.choice
    plan, prepared = planned.plan, planned.prepared
    batches, skipped = _batches(images or calib, preprocess, limit)
    if not batches:
        raise QVisionError("no readable images", images or calib)
    output = prepared.graph.output[0].name
    layers = [
        n
        for n in prepared.graph.node
        if plan.nodes.get(n.name) and plan.nodes[n.name].action in ("quantize", "fold")
    ]
    tensors = [n.output[0] for n in layers]
    sim = Simulator(prepared, planned.input_name, threads)
    float_probe, q_probe = sim.float_probe(tensors), sim.probe(plan, tensors)
    errs = {t: OutputError() for t in tensors}
    final = OutputError()
    outputs = []
    for x in batches:
        ref, got = float_probe(x), q_probe(x)
        for t in tensors:
            errs[t].update(ref[t], got[t])
        final.update(ref[output], got[output])
        outputs.append([ref[o] for o in sim.output_names])
    base = sqnr_db(final.signal, final.noise)

    gains: dict[str, float | None] = {}
    if sensitivity:
        candidates = weight_layers(prepared, plan)
        only = None if top is None else set(_adding_most(candidates, errs, top))
        gains = keep_float_sqnr(
            prepared,
            plan,
            planned.input_name,
            batches,
            threads,
            progress,
            Reference(batches, outputs),
            only,
        )
    reports = []
    labels = layer_labels(prepared)  # counted in the model the node names belong to
    for node, t in zip(layers, tensors, strict=True):
        e = errs[t]
        w = plan.weights.get(node.input[1]) if len(node.input) > 1 else None
        kept = gains.get(node.name)
        reports.append(
            LayerReport(
                node=node.name,
                op_type=node.op_type,
                label=labels.get(node.name),
                kind=plan.nodes[node.name].kind or plan.nodes[node.name].action,
                tensor=t,
                weight_bits=w.bits if w else None,
                sqnr_db=sqnr_db(e.signal, e.noise),
                cosine=e.cos / max(e.n, 1),
                keep_float_output_sqnr_db=kept,
                gain_db=None if kept is None or base is None else kept - base,
            )
        )
    ranked = sorted((r for r in reports if r.gain_db is not None), key=lambda r: -r.gain_db)
    return AnalyzeResult(
        model=str(model),
        target=planned.target.name,
        target_reason=planned.reason,
        method=plan.method,
        method_choice=choice,
        algorithms=plan.algorithms,
        images=sum(len(x) for x in batches),
        output_sqnr_db=base,
        output_cosine=final.cos / max(final.n, 1),
        layers=reports,
        ranking=[r.node for r in ranked],
        seconds=time.perf_counter() - t0,
        skipped=[  # calibration's (which cover the first images), then --images'
            *planned.skipped,
            *(SkippedFile(path=p, reason=r) for p, r in skipped if images is not None),
        ],
        env=environment,
    )
