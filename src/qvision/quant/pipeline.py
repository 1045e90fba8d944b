"""The PTQ pipeline: model -> statistics -> plan -> writer -> model. Called by api.quantize."""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from qvision import provenance
from qvision.data import Dataset, Preprocess, iter_batches, open_dataset
from qvision.data.datasets import first_readable, image_folder
from qvision.data.manifest import build_manifest
from qvision.errors import QVisionError
from qvision.eval.tasks.adapters import guess_task
from qvision.fileio import check_output_path, output_set, sha256_file
from qvision.model import image_input, load_model
from qvision.model.load import model_size
from qvision.model.names import layer_labels
from qvision.model.rewrite import prepare_for_quantization
from qvision.qmath import low_bit
from qvision.quant import algorithms, channel_guard, shiftsafe
from qvision.quant.algorithms import ALGORITHMS, Context, check_options, parse_algos, stage
from qvision.quant.algorithms.context import with_step_names
from qvision.quant.calibrate import HistogramObserver
from qvision.quant.calibrate.observers import METHODS, make_observer
from qvision.quant.calibrate.shifts import with_shifts
from qvision.quant.config import QuantConfig
from qvision.quant.constraints import fit_biases
from qvision.quant.plan import QuantPlan
from qvision.quant.planner import activation_tensors, bounded_inputs, build_plan, decide_nodes
from qvision.quant.stats import RANGES, Statistics
from qvision.quant.validate import check_plan
from qvision.quant.writer import QDQ_OPS, write_qdq
from qvision.records import AlgorithmResult, MethodChoice, QuantizeResult, ShiftCheck, SkippedFile
from qvision.runtime.session import make_session
from qvision.targets import TARGETS, Target, resolve, saturation_warning

# --weights: cap on weight bits, and the tensor type that stores them. "int4" keeps 4-bit
# values in INT8 tensors (range -8..7), so every INT8 runtime fuses and runs them;
# "int4-packed" stores true INT4 (opset 21): half the weight bytes, but ONNX Runtime's CPU
# kernels do not fuse it for Conv, so it dequantizes to float at run time.
WEIGHT_BITS: dict[str, int | None] = {"int8": None, "int4": 4, "int4-packed": 4}
PACKED = {"int4-packed": "int4"}


ACT_BITS = (8, 4)


def default_algos(target: Target, weights: str, acts: int = 8) -> list[str]:
    """The target's pipeline; for sub-8-bit weights block reconstruction joins it when torch
    is there (bias correction alone loses ~15 points at 4 bits, layer-wise AdaRound 4-6).
    Not with 4-bit activations: there it left MobileNetV2's output further from FP32 than
    bias correction alone (docs/experiments.md)."""
    names = list(target.default_algos)
    if WEIGHT_BITS.get(weights) and importlib.util.find_spec("torch"):
        # MSE-clipped 4-bit grids start block reconstruction ~1 dB closer (BENCHMARKS.md)
        if "weight-mse" not in names:
            names.insert(0, "weight-mse")
        if "brecq" not in names and acts == 8:
            names.append("brecq")
    return names


@dataclass
class Planned:
    """Everything up to the writer: the prepared float model and its plan."""

    prepared: onnx.ModelProto
    plan: QuantPlan
    target: Target
    reason: str
    model_sha256: str
    input_name: str
    skipped: list[SkippedFile] = field(default_factory=list)
    calib_images: int = 0
    calibration: tuple[str, int, str] | None = None  # (root, images, dataset sha256)
    started: str = ""
    statistics: Statistics | None = None  # of the float model on the calibration images, for reuse
    dataset: Dataset | None = None  # the calibration images (None: a saved plan replayed)
    preprocess: Preprocess | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    algorithms: list[AlgorithmResult] = field(default_factory=list)  # what each one did


@dataclass
class Prepared:
    """The checked, prepared float model and the settings resolved for it."""

    model: onnx.ModelProto  # prepared for quantization; "pre" algorithms edit it
    input_name: str
    target: Target
    reason: str
    method: str
    model_sha256: str
    bn_stats: dict = field(default_factory=dict)
    started: str = ""
    t0: float = 0.0


def prepare(
    model: str | Path, config: QuantConfig, proto: onnx.ModelProto | None = None
) -> Prepared:
    """Check the settings (before any work), load (unless ``proto`` is the loaded model),
    refuse an already quantized model, resolve the target and prepare the float graph."""
    parse_algos(config.algos)  # unknown names and bad options fail before any work
    check_options(config.algo_options)
    if config.weights not in WEIGHT_BITS:
        raise QVisionError(
            f"unknown --weights '{config.weights}'; available: {', '.join(WEIGHT_BITS)}"
        )
    if config.acts not in ACT_BITS:
        raise QVisionError(f"--acts {config.acts}: use 8 or 4")
    proto = proto if proto is not None else load_model(model)
    inp = image_input(proto, model)
    if any(n.op_type in QDQ_OPS for n in proto.graph.node):
        raise QVisionError(
            "model already contains QuantizeLinear/DequantizeLinear nodes; give the float model",
            model,
        )
    if config.method is not None and config.method not in METHODS:
        raise QVisionError(f"unknown --method '{config.method}'; available: {', '.join(METHODS)}")
    prof, reason = resolve(config.target)
    bn_stats: dict = {}
    prepared = prepare_for_quantization(proto, bn_stats)
    names = {n.name for n in prepared.graph.node}
    for option, given in (("--keep-float", config.keep_float), ("--layer-bits", config.layer_bits)):
        unknown = [k for k in given if k not in names]
        if unknown:
            raise QVisionError(
                f"{option}: '{unknown[0]}' is not a node of the model"
                + (f" ({len(unknown)} unknown)" if len(unknown) > 1 else "")
                + "; node names are in --plan-out's 'nodes' and in qvision analyze",
                model,
            )
    return Prepared(
        prepared,
        inp.name,
        prof,
        reason,
        # 4-bit grids: ranges that minimise each tensor's error, as low-bit PTQ papers start
        config.method or ("mse" if config.acts < 8 else prof.default_method),
        sha256_file(model),
        bn_stats,
        provenance.now(),
        time.perf_counter(),
    )


def _fit_biases(model: onnx.ModelProto, plan: QuantPlan) -> None:
    changed = fit_biases(model, plan)
    if changed:
        plan.warnings.append(
            f"weight step raised on channels of {len(changed)} layer(s) ({', '.join(changed[:3])}"
            f"{'…' if len(changed) > 3 else ''}) whose bias would overflow the int32 "
            "accumulator: near-zero weights with a large bias"
        )


def replay(
    prep: Prepared,
    plan_in: str | Path,
    preprocess: Preprocess,
    threads=None,
    given_target: str = "auto",
) -> Planned:
    """A saved plan for this model: its model-changing algorithms are data-free, so they
    are redone to make the plan's names and weights refer to the same float model.

    The plan's grids were chosen for its target, so the plan's target is the one written
    and recorded; an explicit --target naming another is refused."""
    plan = QuantPlan.load(plan_in)
    if plan.model_sha256 != prep.model_sha256:
        raise QVisionError(
            f"plan was made for another model (sha256 {plan.model_sha256[:12]}…)", plan_in
        )
    target, reason = prep.target, prep.reason
    if plan.target != target.name:
        if given_target != "auto":
            raise QVisionError(
                f"plan was made for target {plan.target}, not --target {given_target}: its "
                "grids belong to that target (drop --target, or plan again with --calib)",
                plan_in,
            )
        if plan.target in TARGETS:
            target = TARGETS[plan.target]
            reason = f"{plan.target}, from the plan (auto would pick {prep.target.name} here)"
            warning = saturation_warning(plan.target)
            if warning:
                plan.warnings.append(warning)
    ctx = Context(
        prep.model,
        None,
        target,
        None,
        preprocess,
        prep.input_name,
        threads,
        bn_stats=prep.bn_stats,
    )
    run_algorithms(ctx, stage(plan.algorithms, "pre"))
    check_plan(plan, prep.model, plan_in)  # against the model the names now refer to
    _fit_biases(prep.model, plan)
    return Planned(
        prep.model,
        plan,
        target,
        reason,
        prep.model_sha256,
        prep.input_name,
        started=prep.started,
        seconds={"calibrate": 0.0, "plan": 0.0},
    )


def calibrate(
    ctx: Context,
    requests: dict[str, dict],
    method: str,
    config: QuantConfig,
    key: str,
    earlier: Statistics | None,
    progress=None,
) -> tuple[Statistics, list[tuple[str, str]]]:
    """Every requested statistic in one pass over the calibration images (``RANGES``: the
    activation ranges; each algorithm's own points), or ``earlier``'s reused when they were
    gathered on the same float model and their ranges serve ``method``; skipped files."""
    if earlier is not None and earlier.key == key:
        ranges = earlier.of(RANGES)
        if all(o.serves(method) for o in ranges.values()) and not earlier.missing(
            RANGES, requests[RANGES]
        ):
            points = {
                **earlier.points,
                RANGES: {t: o.for_method(method) for t, o in ranges.items()},
            }
            return Statistics(key, points), []
    stats = Statistics(key)
    data, transform = ctx.dataset, None
    if config.calib_shifts:
        data, transform = with_shifts(ctx.dataset, config.calib_shifts)
    report = stats.gather(
        ctx.model,
        data,
        ctx.preprocess,
        ctx.input_name,
        requests,
        config.batch_size,
        threads=ctx.threads,
        strict=config.strict,
        progress=progress,
        transform=transform,
    )
    return stats, list(dict.fromkeys(report.skipped))  # a file's shifted copies skip too


def make_plan(
    model: str | Path,
    calib: str | Path | None,
    preprocess: Preprocess,
    config: QuantConfig,
    plan_in: str | Path | None = None,
    threads: int | None = None,
    progress=None,
    proto: onnx.ModelProto | None = None,
    statistics: Statistics | None = None,
    histograms: bool = False,
    dataset: Dataset | None = None,
) -> Planned:
    """prepare → ("pre" algorithms → calibrate → plan → "post" algorithms), or the saved
    ``plan_in`` replayed.

    ``dataset`` (an earlier Planned's) is the calibration set already read and limited.

    ``statistics`` (an earlier Planned's) skips calibration when they cover this plan:
    autotune plans many variants from one pass over the images, collected as
    ``histograms`` so that every calibration method can read them.
    """
    prep = prepare(model, config, proto)
    if plan_in is not None:
        return replay(prep, plan_in, preprocess, threads, given_target=config.target)
    if calib is None:
        raise QVisionError("--calib DIR is needed (or --plan PLAN.json)")
    passed_over: list[tuple[str, str]] = []
    if dataset is None:
        dataset = image_folder(calib) if Path(calib).is_dir() else open_dataset(calib)
        if config.limit and not config.strict:  # --strict fails on the first unreadable file
            dataset, passed_over = first_readable(dataset, config.limit)
        elif config.limit:
            dataset.samples = dataset.samples[: config.limit]
    prof, method, prepared = prep.target, prep.method, prep.model
    pipeline = default_algos(prof, config.weights, config.acts)
    names = parse_algos(pipeline if config.algos is None else config.algos, pipeline)
    ctx = Context(
        prepared,
        None,
        prof,
        dataset,
        preprocess,
        prep.input_name,
        threads,
        bn_stats=prep.bn_stats,
        options=dict(config.algo_options),
        progress=with_step_names(progress),
    )
    done = run_algorithms(ctx, stage(names, "pre"))
    decisions = decide_nodes(prepared, prof, set(config.keep_float))
    tensors = activation_tensors(prepared, decisions)
    # statistics depend on the float model (CLE changes it); histograms serve every method
    key = "|".join(stage(names, "pre"))
    make = (
        (lambda: HistogramObserver(method=method))
        if histograms
        else (lambda: make_observer(method))
    )
    requests = {RANGES: dict.fromkeys(tensors, make)}
    for name in stage(names, "post"):
        if points := ALGORITHMS[name].statistics(prepared, decisions):
            requests[name] = points
    guard = channel_guard.points(prepared, decisions) if prof.guard_channels else {}
    if guard:
        requests[channel_guard.POWER] = guard
    stats, skipped = calibrate(ctx, requests, method, config, key, statistics, progress)
    ctx.stats = stats
    act_fmt = prof.activation.q()
    if config.acts < 8:  # ranges for the grid most tensors get (the edges keep 8 bits)
        act_fmt = low_bit(act_fmt, config.acts)
    full = bounded_inputs(prepared)

    def range_of(t: str, o) -> tuple[float, float]:
        return (o.for_method("minmax") if t in full and o.serves("minmax") else o).range(act_fmt)

    ranges = {t: range_of(t, o) for t, o in stats.of(RANGES).items()}
    if guard and not stats.missing(channel_guard.POWER, guard):
        decisions = _guard_channels(ctx, config, decisions, ranges, act_fmt, make)
        ranges = {t: range_of(t, o) for t, o in stats.of(RANGES).items()}
    t1 = time.perf_counter()
    plan = build_plan(
        prepared,
        ranges,
        prof,
        method,
        prep.model_sha256,
        decisions,
        WEIGHT_BITS[config.weights],
        config.layer_bits,
        PACKED.get(config.weights),
        config.acts if config.acts < 8 else None,
    )
    plan.algorithms.extend(stage(names, "pre"))
    _fit_biases(prepared, plan)
    ctx.plan = plan
    done += run_algorithms(ctx, stage(names, "post"))
    plan.algorithms.extend(stage(names, "post"))
    _fit_biases(prepared, plan)  # algorithms move biases and steps
    plan.warnings.extend(ctx.log)
    return Planned(
        prepared,
        plan,
        prof,
        prep.reason,
        prep.model_sha256,
        prep.input_name,
        skipped=[SkippedFile(path=p, reason=r) for p, r in passed_over + skipped],
        calib_images=len(dataset) - len(skipped),
        calibration=(str(dataset.root), len(dataset), build_manifest(dataset).sha256),
        started=prep.started,
        statistics=stats,
        dataset=dataset,
        preprocess=preprocess,
        seconds={
            "calibrate": t1 - prep.t0,
            "plan": time.perf_counter() - t1,
            **{a.name: a.seconds for a in done},
        },
        algorithms=done,
    )


def _guard_channels(ctx: Context, config: QuantConfig, decisions, ranges, act_fmt, make):
    """The decisions with crushed depthwise layers (and their producers) kept float; the
    tensors that change gather their ranges in a second, smaller pass."""
    floated = channel_guard.crushed(
        ctx.model, decisions, ranges, ctx.stats.of(channel_guard.POWER), act_fmt
    )
    if not floated:
        return decisions
    keep = set(config.keep_float) | set(floated)
    decisions = decide_nodes(ctx.model, ctx.target, keep)
    for name, why in floated.items():
        if name not in config.keep_float:
            decisions[name] = decisions[name].model_copy(update={"reason": why})
    missing = ctx.stats.missing(RANGES, activation_tensors(ctx.model, decisions))
    if missing:
        data, transform = ctx.dataset, None
        if config.calib_shifts:
            data, transform = with_shifts(ctx.dataset, config.calib_shifts)
        ctx.stats.gather(
            ctx.model,
            data,
            ctx.preprocess,
            ctx.input_name,
            {RANGES: dict.fromkeys(missing, make)},
            config.batch_size,
            threads=ctx.threads,
            transform=transform,
        )
    ctx.log.append(
        f"channel guard: kept {len(floated)} layers float (a depthwise input grid left "
        f"≥{channel_guard.SHARE:.0%} of live channels under {channel_guard.SNR_DB:.0f} dB)"
    )
    return decisions


def run_algorithms(ctx: Context, names: list[str]) -> list[AlgorithmResult]:
    """The only algorithm loop: ``names`` in order on ``ctx``. Wall times stay in the results,
    not the plan, so the plan of a run is the same bytes every time."""
    return [algorithms.run(name, ctx) for name in names]


def write_model(planned: Planned, threads: int | None = None) -> bytes:
    """The QDQ model as bytes, checked by onnx and loaded once by ONNX Runtime."""
    qmodel = write_qdq(planned.prepared, planned.plan)
    try:
        onnx.checker.check_model(qmodel)
    except onnx.checker.ValidationError as exc:
        raise QVisionError(
            f"internal: the written model fails the ONNX checker: {str(exc).split(chr(10))[0]}"
        ) from None
    data = qmodel.SerializeToString()
    make_session(data, threads)  # the runtime must accept it before anything is written
    return data


@dataclass
class Chosen:
    """The plan to write, its model bytes and shift check, and how its method was chosen."""

    planned: Planned
    data: bytes
    check: ShiftCheck | None
    skipped_check: str | None
    choice: MethodChoice | None


def plan_shift_safe(
    model: str | Path,
    calib: str | Path | None,
    preprocess: Preprocess,
    config: QuantConfig,
    plan_in: str | Path | None = None,
    threads: int | None = None,
    progress=None,
    proto: onnx.ModelProto | None = None,
) -> Chosen:
    """make_plan, written and shift-checked; without a method, also the alternative ranges
    from the same statistics, and the candidate that holds better under shifts."""
    planned = make_plan(model, calib, preprocess, config, plan_in, threads, progress, proto)
    written = {planned.plan.method: (planned, write_model(planned, threads))}
    if _choosing(config, planned):
        # the alternative ranges from the same statistics; only plan and post algorithms rerun
        t_alt = time.perf_counter()
        alt = make_plan(
            model,
            calib,
            preprocess,
            config.updated(method=shiftsafe.ALTERNATIVE),
            threads=threads,
            proto=proto,
            statistics=planned.statistics,
            dataset=planned.dataset,
        )
        written[shiftsafe.ALTERNATIVE] = (alt, write_model(alt, threads))
        planned.seconds["alternative-plan"] = time.perf_counter() - t_alt
    checks, skipped_check = _shift_checks(planned, model, written, config, threads)
    choice = None
    if len(written) > 1 and checks:
        choice = shiftsafe.choose(checks, planned.plan.method)
        chosen = written[choice.chosen][0]
        if chosen is not planned:  # what the one calibration pass saw stays the first's
            chosen.skipped, chosen.calib_images = planned.skipped, planned.calib_images
            chosen.started, chosen.seconds = planned.started, planned.seconds
            planned = chosen
    method = planned.plan.method
    return Chosen(
        planned,
        written[method][1],
        checks.get(method) if checks else None,
        skipped_check,
        choice,
    )


def run(
    model: str | Path,
    output: str | Path,
    calib: str | Path | None,
    preprocess: Preprocess,
    config: QuantConfig,
    plan_in: str | Path | None = None,
    plan_out: str | Path | None = None,
    threads: int | None = None,
    progress=None,
    environment=None,
    proto: onnx.ModelProto | None = None,
) -> QuantizeResult:
    t0 = time.perf_counter()
    check_output_path(output, [model, calib, plan_in])
    if plan_out is not None:
        check_output_path(
            plan_out, [model, calib, plan_in], others=[output, provenance.manifest_path(output)]
        )
    chosen = plan_shift_safe(model, calib, preprocess, config, plan_in, threads, progress, proto)
    planned = chosen.planned
    return finish(
        planned,
        model,
        output,
        plan_in,
        plan_out,
        config,
        threads,
        environment,
        t0,
        data=chosen.data,
        check=chosen.check,
        skipped_check=chosen.skipped_check,
        choice=chosen.choice,
    )


def _choosing(config: QuantConfig, planned: Planned) -> bool:
    """Whether to plan the alternative ranges too: no method given, a calibration run (not a
    saved plan), the shift check on, and no costly recovery to repeat."""
    return (
        config.method is None
        and planned.dataset is not None
        and config.check_images != 0
        and planned.plan.method != shiftsafe.ALTERNATIVE
        and not shiftsafe.COSTLY & set(planned.plan.algorithms)
    )


def _shift_checks(planned: Planned, model, written: dict, config: QuantConfig, threads):
    """{method: ShiftCheck} of each written candidate, or None and why it was skipped."""
    if planned.dataset is None or config.check_images == 0:
        return None, None
    task = guess_task(planned.prepared, config.task)
    from qvision.eval.robustness.check import check_size, shift_check

    t_check = time.perf_counter()
    try:
        checks = shift_check(
            model,
            {m: data for m, (_, data) in written.items()},
            planned.dataset,
            planned.preprocess,
            planned.input_name,
            task,
            config.check_images or check_size(planned.preprocess),
            threads=threads,
        )
    except QVisionError as exc:  # e.g. the task's reader needs masks or boxes
        return None, f"shift check skipped: {exc.problem}"
    planned.seconds["shift-check"] = time.perf_counter() - t_check
    return checks, None


def finish(
    planned: Planned,
    model: str | Path,
    output: str | Path,
    plan_in: str | Path | None,
    plan_out: str | Path | None,
    config: QuantConfig,
    threads: int | None,
    environment,
    t0: float,
    data: bytes | None = None,
    check: ShiftCheck | None = None,
    skipped_check: str | None = None,
    choice: MethodChoice | None = None,
) -> QuantizeResult:
    """Write the planned model (``data``, when already written) and plan atomically; the
    result record."""
    plan = planned.plan
    t_write = time.perf_counter()
    if data is None:  # not written and checked by run (autotune's pick)
        data = write_model(planned, threads)
        checks, skipped_check = _shift_checks(
            planned, model, {plan.method: (planned, data)}, config, threads
        )
        check = checks[plan.method] if checks else None
    if plan_out is not None:
        # readable names for whoever edits the plan (informational; replay ignores them)
        labels = layer_labels(planned.prepared)
        for name, d in plan.nodes.items():
            d.label = labels.get(name)
    with output_set() as stage:  # model, plan and manifest replaced together
        staged = {"model": stage(output)}
        staged["model"].write_bytes(data)
        if plan_out is not None:
            staged["plan"] = plan.save(stage(plan_out))
        baseline, why = _monitor_baseline(planned, data, config, threads)
        manifest = _manifest(
            planned, model, output, plan_in, plan_out, config, environment, staged, stage, baseline
        )
    t_end = time.perf_counter()
    floats: dict[str, int] = {}
    for d in plan.nodes.values():
        if d.action == "float":
            floats[d.op_type] = floats.get(d.op_type, 0) + 1
    result = QuantizeResult(
        model=str(model),
        model_sha256=planned.model_sha256,
        output=str(output),
        output_sha256=sha256_file(output),
        target=planned.target.name,
        target_reason=planned.reason,
        method=plan.method,
        weights=config.weights,
        acts=config.acts,
        plan=str(plan_out or plan_in) if (plan_out or plan_in) else None,
        calib_images=planned.calib_images,
        skipped=planned.skipped,
        quantized_nodes=len(plan.quantized_nodes()),
        float_nodes=floats,
        size_bytes={"input": model_size(model), "output": model_size(output)},
        seconds={**planned.seconds, "write": t_end - t_write, "total": t_end - t0},
        warnings=[
            *plan.warnings,
            *([check.warning] if check and check.warning else []),
            *([skipped_check] if skipped_check else []),
            *([why] if why else []),
        ],
        algorithms=planned.algorithms,
        shift_check=check,
        method_choice=choice,
        manifest=str(manifest),
        env=environment,
    )
    result._planned = planned
    return result


def _monitor_baseline(planned: Planned, data: bytes, config: QuantConfig, threads):
    """The calibration images' input statistics and clipped shares for ``qvision monitor``
    (kept in the manifest), or None and why not (a replayed plan has no images)."""
    if planned.dataset is None:
        return None, None
    from qvision.monitor.baseline import measure

    t = time.perf_counter()
    batches = (b.inputs for b in iter_batches(planned.dataset, planned.preprocess, 8))
    try:
        base = measure(
            onnx.load_from_string(data), batches, guess_task(planned.prepared, config.task), threads
        )
    except QVisionError as exc:
        return None, f"monitor baseline not stored: {exc.problem}"
    except Exception as exc:  # noqa: BLE001 - optional evidence: the INT8 model still stands
        return (
            None,
            f"monitor baseline not stored: {type(exc).__name__}: {str(exc).split(chr(10))[0]}",
        )
    planned.seconds["monitor-baseline"] = time.perf_counter() - t
    return base, None


def _manifest(
    planned, model, output, plan_in, plan_out, config, environment, staged, stage, baseline=None
) -> Path:
    """The provenance record of the staged outputs, under the names they are renamed to."""
    from dataclasses import asdict

    from qvision.runtime.machine import cpu_info, versions

    root, n, digest = planned.calibration or (None, 0, None)
    record = provenance.Provenance(
        command=provenance.command_line(),
        started=planned.started or provenance.now(),
        finished=provenance.now(),
        input_model=provenance.FileRecord.of_model(model),
        output_model=provenance.FileRecord.of_model(output, staged["model"]),
        plan=provenance.FileRecord.of(plan_out, staged["plan"]) if plan_out else None,
        plan_in=provenance.FileRecord.of(plan_in) if plan_in else None,
        calibration=provenance.DataRecord(root=root, images=n, sha256=digest) if root else None,
        target=planned.target.name,
        target_reason=planned.reason,
        plan_target=planned.plan.target,
        config=asdict(config),
        versions=environment.versions if environment else versions(),
        cpu=environment.cpu if environment else cpu_info(),
        monitor=baseline,
    )
    return provenance.write_manifest(record, output, stage(provenance.manifest_path(output)))
