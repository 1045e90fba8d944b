"""The PTQ pipeline: model -> statistics -> plan -> writer -> model. Called by api.quantize."""

from __future__ import annotations

import time
from pathlib import Path

import onnx

from qvision.algorithms import ALGORITHMS, Context, parse_algos
from qvision.calibrate import collect
from qvision.data import Preprocess, open_dataset
from qvision.data.datasets import image_folder
from qvision.errors import QVisionError
from qvision.fileio import atomic_path, check_output_path, sha256_file
from qvision.model import image_input, load_model
from qvision.model.rewrite import prepare_for_quantization
from qvision.plan import QuantPlan
from qvision.planner import activation_tensors, build_plan, decide_nodes
from qvision.report.schema import QuantizeResult, SkippedFile
from qvision.runtime.session import make_session
from qvision.targets import resolve
from qvision.writer import QDQ_OPS, write_qdq


def run(
    model: str | Path,
    output: str | Path,
    calib: str | Path | None,
    preprocess: Preprocess,
    target: str = "auto",
    method: str | None = None,
    weights: str = "int8",
    plan_in: str | Path | None = None,
    plan_out: str | Path | None = None,
    keep_float: tuple[str, ...] = (),
    algos: str | list[str] | None = None,
    batch_size: int = 1,
    threads: int | None = None,
    strict: bool = False,
    limit: int | None = None,
    progress=None,
    environment=None,
) -> QuantizeResult:
    t0 = time.perf_counter()
    check_output_path(output, [model, calib, plan_in])
    if plan_out is not None:
        check_output_path(plan_out, [model, output, plan_in])
    parse_algos(algos)  # unknown names fail before any work
    if weights != "int8":
        raise QVisionError(f"--weights {weights} is not available yet (int8 only)")
    proto = load_model(model)
    inp = image_input(proto, model)
    if any(n.op_type in QDQ_OPS for n in proto.graph.node):
        raise QVisionError(
            "model already contains QuantizeLinear/DequantizeLinear nodes; give the float model",
            model,
        )
    prof, reason = resolve(target)
    method = method or prof.default_method
    model_hash = sha256_file(model)
    prepared = prepare_for_quantization(proto)
    skipped: list[SkippedFile] = []
    n_calib = 0
    t_cal = time.perf_counter()
    if plan_in is not None:
        plan = QuantPlan.load(plan_in)
        if plan.model_sha256 != model_hash:
            raise QVisionError(
                f"plan was made for another model (sha256 {plan.model_sha256[:12]}…)", plan_in
            )
    else:
        if calib is None:
            raise QVisionError("--calib DIR is needed (or --plan PLAN.json)")
        dataset = image_folder(calib) if Path(calib).is_dir() else open_dataset(calib)
        if limit:
            dataset.samples = dataset.samples[:limit]
        decisions = decide_nodes(prepared, prof, set(keep_float))
        tensors = activation_tensors(prepared, decisions)
        observers, report = collect(
            prepared,
            dataset,
            preprocess,
            tensors,
            method,
            inp.name,
            batch_size,
            threads=threads,
            strict=strict,
            progress=progress,
        )
        skipped = [SkippedFile(path=p, reason=r) for p, r in report.skipped]
        n_calib = len(dataset) - len(report.skipped)
        act_fmt = prof.activation.q()
        ranges = {t: o.range(act_fmt) for t, o in observers.items()}
        t_plan = time.perf_counter()
        plan = build_plan(prepared, ranges, prof, method, model_hash, decisions)
        ctx = Context(prepared, plan, prof, dataset, preprocess, inp.name, threads)
        for name in parse_algos(prof.default_algos if algos is None else algos):
            ctx = ALGORITHMS[name][1](ctx)
            plan.algorithms.append(name)
        plan.warnings.extend(ctx.log)
    t_write = time.perf_counter()
    qmodel = write_qdq(prepared, plan)
    try:
        onnx.checker.check_model(qmodel)
    except onnx.checker.ValidationError as exc:
        raise QVisionError(
            f"internal: the written model fails the ONNX checker: {str(exc).splitlines()[0]}"
        ) from None
    data = qmodel.SerializeToString()
    make_session(data, threads)  # the runtime must accept it before we write anything
    with atomic_path(output) as tmp:
        tmp.write_bytes(data)
    if plan_out is not None:
        plan.save(plan_out)
    t_end = time.perf_counter()
    floats: dict[str, int] = {}
    for d in plan.nodes.values():
        if d.action == "float":
            floats[d.op_type] = floats.get(d.op_type, 0) + 1
    return QuantizeResult(
        model=str(model),
        model_sha256=model_hash,
        output=str(output),
        output_sha256=sha256_file(output),
        target=prof.name,
        target_reason=reason,
        method=plan.method,
        weights=weights,
        plan=str(plan_out or plan_in) if (plan_out or plan_in) else None,
        calib_images=n_calib,
        skipped=skipped,
        quantized_nodes=len(plan.quantized_nodes()),
        float_nodes=floats,
        size_bytes={"input": Path(model).stat().st_size, "output": Path(output).stat().st_size},
        seconds={
            "calibrate": (t_write - t_cal) if plan_in else (t_plan - t_cal),
            "plan": 0.0 if plan_in else (t_write - t_plan),
            "write": t_end - t_write,
            "total": t_end - t0,
        },
        warnings=plan.warnings,
        env=environment,
    )
