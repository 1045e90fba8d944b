"""Command line: flags -> API calls -> a Rich table and optional JSON. No logic lives here."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from qvision.errors import QVisionError
from qvision.eval.tasks.adapters import ADAPTERS
from qvision.quant.algorithms import ALGORITHMS
from qvision.quant.calibrate.observers import METHODS
from qvision.report.build import DEFAULT_PARTS, PARTS, parse_parts
from qvision.targets import TARGETS

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Quantize computer-vision ONNX models, with evidence.",
)
zoo_app = typer.Typer(no_args_is_help=True, help="Offline model zoo built from pip packages.")
data_app = typer.Typer(no_args_is_help=True, help="Dataset utilities.")
app.add_typer(zoo_app, name="zoo")
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        from qvision.version import __version__

        print(f"qvision {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Quantize computer-vision ONNX models, with evidence."""


# Piped or logged output gets 120 columns: the tables fold model names at rich's default 80.
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, soft_wrap=True)

JsonOpt = typer.Option(None, "--json", help="Also write the result as JSON to this file.")
AlphabetOpt = typer.Option(
    None,
    "--alphabet",
    help="OCR recognizer's dictionary file (one character per line, as PaddleOCR's "
    "ppocr_keys_v1.txt), for a model without 'character' metadata.",
)
ActsOpt = typer.Option(
    8,
    "--acts",
    help="Activation bits: 8, or 4 (4-bit tensors, opset 21: ONNX Runtime runs them "
    "unfused, so they show 4-bit accuracy, not speed; first and last layers' inputs keep 8).",
)
GroupsOpt = typer.Option(
    None,
    "--groups",
    help="CSV 'image,<attribute>...' (image: path relative to the data folder, or file "
    "name): per attribute value, FP32 and INT8 top-1 and the paired change (needs labels "
    "and an FP32 reference). Images not listed are counted, not grouped.",
)
ThreadsOpt = typer.Option(
    None, "--threads", min=1, help="Intra-op threads (default: physical cores)."
)
ExecutorOpt = typer.Option(
    "local",
    "--executor",
    help="local (this process) | ray (Ray tasks on the cluster RAY_ADDRESS names, else the "
    "one `ray start` made here, else a new one here; needs the ray extra).",
)
CpusPerTaskOpt = typer.Option(
    1, "--cpus-per-task", min=1, help="--executor ray: CPUs (ONNX Runtime threads) per task."
)


def _save_json(result, path: Path | None, inputs: list, others: list = ()) -> None:
    if path is None:
        return
    from qvision.fileio import check_output_path
    from qvision.records import write_json

    check_output_path(path, inputs, others)
    write_json(result, path)
    out.print(f"JSON results: {path}")


def _check_json_path(path: Path | None, inputs: list, others: list = ()) -> None:
    """Validate the --json target before doing the work, so a bad path fails fast."""
    if path is not None:
        from qvision.fileio import check_output_path

        check_output_path(path, inputs, others)


# Without a terminal (a log file, CI) progress is a plain line this often, so an hour of
# AdaRound is not silent; QVISION_PROGRESS_SECONDS changes it.
LOG_EVERY = float(os.environ.get("QVISION_PROGRESS_SECONDS", "30"))


def progress_lines(label: str, write, every: float = LOG_EVERY, clock=None):
    """A progress callback that writes 'label: done/total (elapsed)' at most every
    ``every`` seconds, and the last step of a phase that took that long."""
    import time

    clock = clock or time.monotonic
    start = clock()
    last = [start]

    def update(done: int, total: int | None, what: str | None = None) -> None:
        now = clock()
        final = total is not None and done >= total and now - start >= every
        if now - last[0] >= every or final:
            last[0] = now
            of = f"/{total}" if total else ""
            step = f" {what}" if what else ""
            write(f"{label}{step}: {done}{of} ({now - start:.0f} s)")

    return update


@contextmanager
def _progress(label: str):
    if not err.is_terminal:
        yield progress_lines(label, lambda line: err.print(line, markup=False, highlight=False))
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    task = bar.add_task(label, total=None)

    def update(done: int, total: int | None, what: str | None = None) -> None:
        name = f"{label} {what}" if what else label
        bar.update(task, completed=done, total=total, description=name)

    with bar:
        yield update


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def _span(interval) -> str:
    """'[a, b] %' for a share's 95 % interval, '' where there is none."""
    return "" if interval is None else f"[{100 * interval[0]:.1f}, {100 * interval[1]:.1f}] %"


def _json_arg(text: str | None, flag: str) -> dict | None:
    if text is None:
        return None
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QVisionError(f"{flag} is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise QVisionError(f"{flag} must be a JSON object")
    return value


def _pairs(text: str | None, flag: str, cast=str) -> dict:
    out = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            out[key.strip()] = cast(value.strip())
        except ValueError:
            raise QVisionError(f"{flag} expects KEY=VALUE pairs, got '{item}'") from None
    return out


def _algo_options(items: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in items:
        for key, value in _pairs(item, "--algo-option").items():
            algo, dot, opt = key.partition(".")
            if not dot or not opt:
                raise QVisionError(f"--algo-option expects ALGO.KEY=VALUE, got '{item}'")
            out.setdefault(algo, {})[opt] = value
    return out


@app.command("quantize")
def quantize_cmd(
    model: Path = typer.Argument(..., help="Float ONNX model."),
    output: Path = typer.Option(..., "-o", "--output", help="Quantized QDQ ONNX model to write."),
    calib: Path | None = typer.Option(None, "--calib", help="Calibration images (folder)."),
    preprocess: str | None = typer.Option(
        None, "--preprocess", help="imagenet | tf | FILE.json/yaml."
    ),
    target: str = typer.Option(
        "auto",
        "--target",
        help=" | ".join(["auto", *TARGETS]) + ".",
    ),
    method: str | None = typer.Option(
        None,
        "--method",
        help=" | ".join(METHODS)
        + " (default: the target's, or minmax when its INT8 follows FP32 clearly better on "
        "shifted copies of calibration images; see --shift-check).",
    ),
    weights: str = typer.Option(
        "int8",
        "--weights",
        help=(
            "int8; int4 (4-bit values in INT8 tensors: runs fused on every INT8 runtime); "
            "int4-packed (true INT4, opset 21: half the weight bytes, dequantized at run time "
            "by ONNX Runtime CPU)."
        ),
    ),
    acts: int = ActsOpt,
    plan_out: Path | None = typer.Option(
        None, "--plan-out", help="Write the quantization plan (JSON) here."
    ),
    plan: Path | None = typer.Option(
        None, "--plan", help="Apply this (edited) plan instead of calibrating."
    ),
    keep_float: str | None = typer.Option(
        None, "--keep-float", help="Comma-separated node names to keep in float."
    ),
    algo: str | None = typer.Option(
        None,
        "--algo",
        help=(
            f"Recovery algorithms, comma-separated ({', '.join(ALGORITHMS)}), or 'none'; "
            "default: the target's."
        ),
    ),
    algo_option: list[str] | None = typer.Option(
        None,
        "--algo-option",
        help="ALGO.KEY=VALUE, repeatable, e.g. adaround.iters=5000, adaround.device=cuda.",
    ),
    layer_bits: str | None = typer.Option(
        None, "--layer-bits", help="NODE=BITS,... weight bits for single layers (mixed precision)."
    ),
    eval_dir: Path | None = typer.Option(
        None, "--eval", help="Also evaluate FP32 vs INT8 on these images (and tune on them)."
    ),
    groups: Path | None = GroupsOpt,
    task: str | None = typer.Option(
        None,
        "--task",
        help=" | ".join(ADAPTERS)
        + ": the task adapter for --eval and the shift check (default: the model's "
        "qvision.task metadata, else classification).",
    ),
    max_drop: float | None = typer.Option(
        None,
        "--max-drop",
        help="Autotune: fastest configuration whose metric on --eval drops at most PTS points.",
    ),
    tune_time: float = typer.Option(
        1800, "--tune-time", min=1, help="Autotune time limit, seconds."
    ),
    tune_images: int | None = typer.Option(
        None, "--tune-images", min=1, help="Autotune on the first N --eval images only."
    ),
    executor: str = typer.Option(
        "local",
        "--executor",
        help="Where --max-drop's trials run: local | ray (as many at once as the cluster "
        "has CPUs per --cpus-per-task; the chosen configuration is the same).",
    ),
    cpus_per_task: int = CpusPerTaskOpt,
    report: Path | None = typer.Option(
        None,
        "--report",
        help="Also write the evidence (report.html, MODEL_CARD.md, manifest.json) to this "
        "folder: accuracy, fidelity, the shift check, data checks, provenance and the parts "
        "of --report-parts (needs --eval).",
    ),
    report_parts: str | None = typer.Option(
        None,
        "--report-parts",
        help=f"Comma-separated: {', '.join(PARTS)}; 'all', 'none' (default: "
        f"{','.join(DEFAULT_PARTS)}; full robustness and attacks take minutes).",
    ),
    batch: int = typer.Option(
        1,
        "--batch",
        min=1,
        help="Calibration batch size (1 is fastest on CPU and uses least memory).",
    ),
    threads: int | None = ThreadsOpt,
    strict: bool = typer.Option(False, "--strict", help="Fail on the first unreadable image."),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Use only the first N calibration images."
    ),
    calib_shifts: int = typer.Option(
        0,
        "--calib-shifts",
        min=0,
        help="Also calibrate on N shifted copies of each calibration image (darker, "
        "brighter, lower contrast, noise, defocus), so ranges hold under such inputs.",
    ),
    shift_check: int | None = typer.Option(
        None,
        "--shift-check",
        min=0,
        help="Compare FP32 and INT8 on shifted copies (dark, bright, low contrast, defocus) "
        "of N calibration images, label-free by --task (default: 16 at 224x224, fewer for "
        "larger inputs, at least 4); without --method this also picks the ranges that hold "
        "best under those shifts; 0: skip both.",
    ),
    json_out: Path | None = JsonOpt,
):
    """Post-training quantization to a QDQ ONNX model that the target runtime fuses."""
    from qvision.eval.evaluate import model_task
    from qvision.evidence import prove
    from qvision.provenance import manifest_path
    from qvision.quant.config import QuantConfig, TuneOptions

    inputs = [model, calib, plan, eval_dir, groups]
    _check_json_path(json_out, inputs, others=[output, plan_out, manifest_path(output)])
    parts = parse_parts(report_parts)
    if report_parts is not None and report is None:
        raise QVisionError("--report-parts needs --report DIR")
    config = QuantConfig(
        target=target,
        method=method,
        weights=weights,
        acts=acts,
        algos=algo,
        keep_float=tuple(k.strip() for k in (keep_float or "").split(",") if k.strip()),
        layer_bits=_pairs(layer_bits, "--layer-bits", int),
        algo_options=_algo_options(algo_option or []),
        batch_size=batch,
        limit=limit,
        strict=strict,
        check_images=shift_check,
        calib_shifts=calib_shifts,
        task=task,
    )
    tune = None
    if max_drop is not None:
        tune = TuneOptions(max_drop, eval_dir, model_task(model, task), tune_time, tune_images)
    done = prove(
        model,
        output,
        calib,
        config,
        preprocess=preprocess,
        plan=plan,
        plan_out=plan_out,
        tune=tune,
        eval_dir=eval_dir,
        task=task,
        report=report,
        report_parts=parts,
        groups=groups,
        threads=threads,
        phases=_progress,
        on_quantized=_print_quantized,
        executor=executor,
        cpus_per_task=cpus_per_task,
    )
    if done.int8 is not None:
        _print_comparison(done.fp32, done.int8, eval_dir, done.int8.task)
        _print_harm(done.int8.harm)
        _print_class_ap(done.int8.class_ap)
    if done.report is not None:
        out.print(f"report: {done.report}")
    _save_json(done.record(), json_out, inputs, others=[output, plan_out])


@app.command("qat")
def qat_cmd(
    model: Path = typer.Argument(..., help="Float ONNX model."),
    output: Path = typer.Option(..., "-o", "--output", help="Trained QDQ ONNX model to write."),
    calib: Path = typer.Option(..., "--calib", help="Training images (folder; no labels needed)."),
    weights: str = typer.Option("int8", "--weights", help="int8 | int4 | int4-packed."),
    acts: int = ActsOpt,
    target: str = typer.Option("auto", "--target", help=" | ".join(["auto", *TARGETS]) + "."),
    steps: int | None = typer.Option(
        None, "--steps", min=0, help="Training steps (default 300, batch 16)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the crops and batches."),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda."),
    labels: bool = typer.Option(
        False, "--labels", help="Also learn from the calibration folder's classes (class folders)."
    ),
    algo: str = typer.Option(
        "default",
        "--algo",
        help="The PTQ pipeline training starts from ('default': the target's), as --algo of quantize.",
    ),
    algo_option: list[str] | None = typer.Option(
        None, "--algo-option", help="ALGO.KEY=VALUE, repeatable, e.g. qat.lr=0.001."
    ),
    preprocess: str | None = typer.Option(
        None, "--preprocess", help="imagenet | tf | FILE.json/yaml."
    ),
    plan_out: Path | None = typer.Option(
        None, "--plan-out", help="Write the trained plan (JSON) here."
    ),
    eval_dir: Path | None = typer.Option(
        None, "--eval", help="Also evaluate FP32 vs the trained model on these images."
    ),
    task: str | None = typer.Option(None, "--task", help=" | ".join(ADAPTERS) + "."),
    threads: int | None = ThreadsOpt,
    json_out: Path | None = JsonOpt,
):
    """Quantization-aware training from the PTQ plan, distilled from the FP32 model; the
    same QDQ writer emits the result."""
    from qvision.api import qat_config
    from qvision.evidence import prove
    from qvision.provenance import manifest_path
    from qvision.quant.config import QuantConfig

    inputs = [model, calib, eval_dir]
    _check_json_path(json_out, inputs, others=[output, plan_out, manifest_path(output)])
    if labels:  # before the PTQ pipeline's minutes, not after them
        from qvision.data.datasets import labelled_folder

        try:
            labelled_folder(calib)
        except QVisionError as exc:
            raise QVisionError(
                f"--labels needs labelled calibration images (class folders): {exc.problem}",
                calib,
            ) from None
    config = QuantConfig(
        target=target,
        weights=weights,
        acts=acts,
        algos=algo,
        algo_options=_algo_options(algo_option or []),
        task=task,
    )
    done = prove(
        model,
        output,
        calib,
        qat_config(config, steps, seed, device, labels),
        preprocess=preprocess,
        plan_out=plan_out,
        eval_dir=eval_dir,
        task=task,
        threads=threads,
        phases=_progress,
        on_quantized=_print_quantized,
    )
    if done.int8 is not None:
        _print_comparison(done.fp32, done.int8, eval_dir, done.int8.task)
    _save_json(done.record(), json_out, inputs, others=[output, plan_out])


def _print_quantized(res) -> None:
    from qvision.records import ci95_text

    if res.tuning is not None:
        t = res.tuning
        table = Table(title=f"autotune on {t.images} images (FP32 {_pct(t.fp32_metric)})")
        for col in ("#", "trial", t.metric, "drop", "agreement", "ms", "s"):
            table.add_column(col, justify="left" if col == "trial" else "right")
        for i, tr in enumerate(t.trials):
            mark = " ←" if i == t.chosen else ""
            table.add_row(
                str(i),
                tr.name + mark,
                _pct(tr.metric),
                f"{tr.drop:.2f}{ci95_text(tr.drop_ci95, label=False)}",
                _pct(tr.agreement),
                f"{tr.latency_ms:.1f}" if tr.latency_ms else "—",
                f"{tr.seconds:.0f}",
            )
        out.print(table)
        (out if t.met else err).print(t.message)
    out.print(
        f"target {res.target_reason}; method {res.method}; {res.quantized_nodes} nodes quantized"
    )
    if res.float_nodes:
        out.print("kept float: " + ", ".join(f"{k}×{v}" for k, v in res.float_nodes.items()))
    if res.shift_check is not None:
        _print_shift_check(res.shift_check)
    if res.method_choice is not None:
        m = res.method_choice
        others = ", ".join(k for k in m.mean_sqnr_db if k != m.chosen)
        out.print(f"calibration method: {m.chosen}, chosen over {others} ({m.reason})")
    done = [a.message for a in res.algorithms]  # what each algorithm did: news, no warning
    for line in done:
        out.print(line, markup=False, highlight=False)
    for w in res.warnings:
        if w not in done:
            err.print(f"warning: {w}")
    _print_skipped(res.skipped, "unreadable calibration file(s)")
    out.print(
        f"wrote {res.output} ({res.size_bytes['output'] / 1e6:.2f} MB, was {res.size_bytes['input'] / 1e6:.2f} MB) "
        f"in {res.seconds['total']:.1f} s" + _algorithm_times(res)
    )
    if res.plan:
        out.print(f"plan: {res.plan}")


def _print_shift_check(c) -> None:
    what = c.measure if c.clean is not None else "output SQNR only (no task known; --task adds it)"
    table = Table(
        title=f"shift check: INT8 vs FP32 {what} on {c.images} calibration images "
        "(95 % joint intervals)"
    )
    cols = (
        *(("shift", c.measure, "interval") if c.clean is not None else ("shift",)),
        "SQNR dB",
        "",
    )
    for col in cols:
        table.add_column(col, justify="left" if col in ("shift", "") else "right")

    def cells(agree, ci, sqnr):
        first = (_pct(agree), _span(ci)) if c.clean is not None else ()
        return (*first, "identical" if sqnr is None else f"{sqnr:.1f}")

    table.add_row("clean", *cells(c.clean, c.clean_ci, c.clean_sqnr_db), "")
    for row in c.rows:
        table.add_row(
            f"{row.shift} {row.severity}",
            *cells(row.agreement, row.agreement_ci, row.sqnr_db),
            "departs" if row.departs else "",
        )
    out.print(table)


def _print_comparison(fp32, int8, eval_dir, task: str) -> None:
    from qvision.records import ci95_text

    table = Table(title=f"FP32 vs INT8 on {eval_dir} ({int8.n} images)")
    for col in ("metric", "FP32", "INT8", "change"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for k, v in fp32.metrics.items():
        q = int8.metrics[k]
        ci = ci95_text(int8.fidelity.drop_ci95_points) if k == "top1" and int8.fidelity else ""
        table.add_row(k, _pct(v), _pct(q), f"{100 * (q - v):+.2f}{ci} pts")
    if int8.agreement is not None:
        span = int8.fidelity.top1_agreement_ci95 if int8.fidelity else None
        table.add_row(_agreement_label(task), "", _pct(int8.agreement), _span(span))
    if int8.fidelity:
        table.add_row(
            "SQNR",
            "",
            "—" if int8.fidelity.sqnr_db is None else f"{int8.fidelity.sqnr_db:.2f} dB",
            "",
        )
    out.print(table)


def _primary(task: str) -> tuple[str, int]:
    """The task's headline metric and +1 when higher is better (top1), -1 when lower (cer)."""
    from qvision.eval.tasks.adapters import ADAPTERS

    return ADAPTERS[task].primary if task in ADAPTERS else ("top1", 1)


def _algorithm_times(res) -> str:
    """' (adaround 21 s, ...)' for the algorithms that ran, from the result's timings."""
    phases = {"calibrate", "plan", "write", "total"}
    spent = [f"{k} {v:.0f} s" for k, v in res.seconds.items() if k not in phases]
    return f" ({', '.join(spent)})" if spent else ""


def _agreement_label(task: str) -> str:
    from qvision.eval.tasks.adapters import ADAPTERS

    return ADAPTERS[task].agreement if task in ADAPTERS else "agreement"


@app.command("analyze")
def analyze_cmd(
    model: Path = typer.Argument(..., help="Float ONNX model."),
    calib: Path = typer.Option(..., "--calib", help="Calibration images (folder)."),
    images: Path | None = typer.Option(
        None, "--images", help="Images to measure on (default: --calib)."
    ),
    preprocess: str | None = typer.Option(
        None, "--preprocess", help="imagenet | tf | FILE.json/yaml."
    ),
    target: str = typer.Option("auto", "--target", help="Target profile (see `quantize`)."),
    method: str | None = typer.Option(None, "--method", help="Calibration method."),
    algo: str | None = typer.Option(None, "--algo", help="Recovery algorithms or 'none'."),
    limit: int = typer.Option(32, "--limit", min=1, help="Images to measure on."),
    sensitivity: bool = typer.Option(
        True, "--sensitivity/--no-sensitivity", help="Keep-one-layer-float ranking."
    ),
    top: int = typer.Option(15, "--top", min=1, help="Rows to print."),
    threads: int | None = ThreadsOpt,
    json_out: Path | None = JsonOpt,
):
    """Per-layer SQNR/cosine of the quantized model vs float, and the layers most worth keeping float."""
    from qvision import api
    from qvision.model.names import display_name
    from qvision.quant.config import QuantConfig

    _check_json_path(json_out, [model, calib, images])
    with _progress("analyzing") as cb:
        res = api.analyze(
            model,
            calib,
            images,
            QuantConfig(target=target, method=method, algos=algo),
            preprocess=preprocess,
            limit=limit,
            threads=threads,
            sensitivity=sensitivity,
            progress=cb,
        )
    out.print(
        f"target {res.target_reason}; method {res.method}; algorithms {', '.join(res.algorithms) or 'none'}; "
        f"{res.images} images; output SQNR {res.output_sqnr_db:.2f} dB, cosine {res.output_cosine:.4f}"
    )
    table = Table(
        title="most sensitive layers (output SQNR gain when kept float)"
        if res.ranking
        else "layers"
    )
    # the label reads (position and shape where the ONNX name is generated); the node name
    # is what --keep-float, --layer-bits and plans take
    for col in ("layer", "node", "w bits", "layer SQNR dB", "cosine", "gain dB"):
        table.add_column(
            col, justify="left" if col in ("layer", "node") else "right", overflow="fold"
        )
    by_name = {r.node: r for r in res.layers}
    rows = [by_name[n] for n in res.ranking] or res.layers
    for r in rows[:top]:
        table.add_row(
            display_name(r.node, r.label),
            r.node,
            "—" if r.weight_bits is None else str(r.weight_bits),
            "identical" if r.sqnr_db is None else f"{r.sqnr_db:.2f}",
            f"{r.cosine:.4f}",
            "—" if r.gain_db is None else f"{r.gain_db:+.2f}",
        )
    out.print(table)
    _print_skipped(res.skipped, "unreadable file(s)")
    _save_json(res, json_out, [model, calib, images])


@app.command("eval")
def eval_cmd(
    model: Path = typer.Argument(..., help="ONNX model to evaluate."),
    data: Path = typer.Option(
        ...,
        "--data",
        help=(
            "Image folder: class sub-folders for labels, or flat; labels.txt for ocr-rec; "
            "annotations.json (COCO) or names.txt + labels/ (YOLO) for detection; "
            "JPEGImages/ + SegmentationClass/ (VOC) or images/ + masks/ for segmentation; "
            "labels.txt with PaddleOCR regions for ocr-det."
        ),
    ),
    task: str | None = typer.Option(
        None,
        "--task",
        help=" | ".join(ADAPTERS) + " (default: the model's qvision.task metadata, else "
        "classification).",
    ),
    decoder: str | None = typer.Option(
        None,
        "--decoder",
        help='Detection output spec as JSON, e.g. \'{"layout": "yolo-obj"}\' (default: model metadata).',
    ),
    reference: Path | None = typer.Option(
        None,
        "--reference",
        help="FP32 model: fidelity to it; with labels also the paired top-1 change, per "
        "class (most hurt first) and the images the two classify differently.",
    ),
    groups: Path | None = GroupsOpt,
    preprocess: str | None = typer.Option(
        None, "--preprocess", help="imagenet | tf | FILE.json/yaml."
    ),
    batch: int = typer.Option(32, "--batch", min=1, help="Batch size."),
    threads: int | None = ThreadsOpt,
    strict: bool = typer.Option(False, "--strict", help="Fail on the first unreadable image."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Use only the first N images."),
    predictions: bool = typer.Option(
        False, "--predictions", help="Record top-5 predictions per image."
    ),
    alphabet: Path | None = AlphabetOpt,
    executor: str = ExecutorOpt,
    cpus_per_task: int = CpusPerTaskOpt,
    json_out: Path | None = JsonOpt,
):
    """Accuracy against labels and/or fidelity against a reference model."""
    from qvision import api
    from qvision.eval.evaluate import model_task

    task = model_task(model, task)
    from qvision.records import ci95_text

    _check_json_path(json_out, [model, reference, groups])
    if alphabet is not None:
        from qvision.eval.tasks.ocr import read_alphabet

        read_alphabet(alphabet)  # a bad file fails before any work
    with _progress("evaluating") as cb:
        res = api.evaluate(
            model,
            data,
            task,
            reference,
            preprocess=preprocess,
            batch_size=batch,
            threads=threads,
            strict=strict,
            limit=limit,
            keep_predictions=predictions,
            progress=cb,
            decoder=_json_arg(decoder, "--decoder"),
            alphabet=alphabet,
            groups=groups,
            executor=executor,
            cpus_per_task=cpus_per_task,
        )
    for w in res.warnings:
        err.print(f"warning: {w}")
    table = Table(title=f"{model.name} on {res.dataset.root} ({res.n} images)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95 % interval", justify="right")
    for k, v in res.metrics.items():
        table.add_row(k, _pct(v), _span(res.metrics_ci95.get(k)))
    if res.agreement is not None:
        span = res.fidelity.top1_agreement_ci95 if res.fidelity else None
        table.add_row(_agreement_label(task), _pct(res.agreement), _span(span))
    if res.fidelity:
        f = res.fidelity
        if f.drop_points is not None:
            metric, sign = _primary(task)  # points lost -> the metric's own change
            table.add_row(
                f"{metric} vs reference",
                f"{-sign * f.drop_points + 0.0:+.2f}{ci95_text(f.drop_ci95_points)} pts",
            )
        table.add_row("cosine", f"{f.cosine:.5f}")
        table.add_row("SQNR", "identical" if f.sqnr_db is None else f"{f.sqnr_db:.2f} dB")
        table.add_row("KL divergence", f"{f.kl_div:.5f}")
    table.add_row("time", f"{res.seconds:.1f} s")
    out.print(table)
    _print_harm(res.harm)
    _print_class_ap(res.class_ap)
    if res.predictions:
        _print_predictions(res)
    _print_skipped(res.dataset.skipped, "unreadable file(s)")
    _save_json(res, json_out, [model, reference, groups])


def _harm_row(label: str, x) -> list[str]:
    lo, hi = x.change_ci95
    return [
        label,
        str(x.n),
        f"{_pct(x.reference_top1)} → {_pct(x.top1)}",
        f"{x.change_points:+.1f} [{lo:+.1f}, {hi:+.1f}]",
        f"{x.lost}/{x.gained}",
    ]


def _print_class_ap(h, shown: int = 5) -> None:
    """A detector's most hurt classes by AP (all classes are in --json)."""
    if h is None:
        return
    from qvision.report.harm import class_ap_summary

    by_id = {c.category_id: c for c in h.per_class}
    if h.most_hurt:
        table = Table(title=f"most hurt classes by {h.metric} (of {h.classes}; all in --json)")
        for col in ("class", "images/boxes", "AP FP32 → INT8", "change pts [95 %]"):
            table.add_column(col, justify="left" if col == "class" else "right")
        for c in (by_id[i] for i in h.most_hurt[:shown]):
            ci = (
                ""
                if c.change_ci95 is None
                else f" [{c.change_ci95[0]:+.1f}, {c.change_ci95[1]:+.1f}]"
            )
            table.add_row(
                c.name,
                f"{c.images}/{c.instances}",
                f"{100 * c.reference_ap:.1f} → {100 * c.ap:.1f}",
                f"{c.change_points:+.1f}{ci}",
            )
        out.print(table)
    out.print(class_ap_summary(h))


def _print_harm(harm, shown: int = 5) -> None:
    """The most hurt classes and every group (all classes are in --json)."""
    if harm is None:
        return
    from qvision.report.harm import harm_summary

    by_label = {c.label: c for c in harm.per_class}
    hurt = [by_label[i] for i in harm.most_hurt[:shown]]
    if hurt:
        table = Table(title=f"most hurt classes (of {harm.classes}; all in --json)")
        for col in ("class", "n", "top-1 FP32 → INT8", "change pts [95 %]", "lost/gained"):
            table.add_column(col, justify="left" if col == "class" else "right")
        for c in hurt:
            table.add_row(*_harm_row(c.name, c))
        out.print(table)
    out.print(harm_summary(harm))
    if harm.groups:
        table = Table(title=f"groups ({harm.groups_file})")
        for col in (
            "attribute = value",
            "n",
            "top-1 FP32 → INT8",
            "change pts [95 %]",
            "lost/gained",
        ):
            table.add_column(col, justify="left" if col.startswith("attr") else "right")
        for g in harm.groups:
            table.add_row(*_harm_row(f"{g.attribute} = {g.value}", g))
        out.print(table)
        unlisted = {a: n for a, n in harm.groups_unlisted.items() if n}
        if unlisted:
            out.print(
                "not in any group (no value): "
                + ", ".join(f"{a} {n} image{'s' if n != 1 else ''}" for a, n in unlisted.items())
            )


def _print_skipped(files, what: str) -> None:
    """Skipped files (each with .path and .reason) on stderr: the first 10, then a count."""
    if not files:
        return
    err.print(f"warning: skipped {len(files)} {what}:")
    for f in files[:10]:
        err.print(f"  {f.path}: {f.reason}")
    if len(files) > 10:
        err.print(f"  ... and {len(files) - 10} more (all in --json)")


def _print_predictions(res, int8=None) -> None:
    table = Table(title="top-1 predictions")
    table.add_column("image")
    table.add_column("FP32 class" if int8 else "class")
    table.add_column("p", justify="right")
    if int8:
        table.add_column("INT8 class")
        table.add_column("p", justify="right")
    others = {p.path: p for p in int8.predictions} if int8 else {}

    def cell(p):
        idx, prob = p.top5[0]
        return [p.labels[0] if p.labels else str(idx), f"{prob:.2f}"]

    for p in res.predictions[:50]:
        row = [Path(p.path).name, *cell(p)]
        if int8 and p.path in others:
            row += cell(others[p.path])
        table.add_row(*row)
    out.print(table)


@app.command("bench")
def bench_cmd(
    models: list[Path] = typer.Argument(..., help="ONNX models; speedup is relative to the first."),
    threads: int | None = ThreadsOpt,
    batch: int = typer.Option(
        1, "--batch", min=1, help="Also measure this batch size (batch 1 always)."
    ),
    rounds: int = typer.Option(10, "--rounds", min=1, help="Interleaved rounds."),
    seconds: float = typer.Option(
        3.0, "--seconds", min=0.01, help="Timed seconds per model and batch size."
    ),
    size: str | None = typer.Option(
        None, "--size", help="HxW for models with dynamic spatial dims."
    ),
    memory: bool = typer.Option(
        True, "--memory/--no-memory", help="Measure peak RSS in a child process."
    ),
    json_out: Path | None = JsonOpt,
):
    """Latency (median, p90), throughput, size and peak memory, measured interleaved."""
    from qvision import api

    _check_json_path(json_out, models)
    with _progress("benchmarking") as cb:
        res = api.benchmark(models, threads, batch, rounds, seconds, size, memory, progress=cb)
    _print_bench(res)
    _save_json(res, json_out, models)


def _energy_cell(m) -> str:
    if m.energy_j is None:
        return "—"
    note = m.uncounted_text()
    return f"{m.energy_j * 1e3:.2f}" + (f" ({note})" if note else "")


def _print_bench(res) -> None:
    table = Table(title=f"latency, {res.threads} thread(s), {res.rounds} interleaved rounds")
    estimated = any(m.energy_method == "estimate" for m in res.models)
    energy_col = "mJ/img (estimate)" if estimated else "mJ/img"
    for col in ("model", "size", "median ms", "p90 ms", "img/s", "speedup", "peak RSS", energy_col):
        table.add_column(col, justify="left" if col == "model" else "right", overflow="fold")
    if res.batch > 1:
        table.add_column(f"b{res.batch} median ms", justify="right")
        table.add_column(f"b{res.batch} img/s", justify="right")
    for m in res.models:
        row = [
            Path(m.path).name,
            f"{m.size_bytes / 1e6:.2f} MB",
            f"{m.median_ms:.3f}",
            f"{m.p90_ms:.3f}",
            f"{m.throughput_ips:.1f}",
            f"{m.speedup:.2f}×",
            "—" if m.peak_rss_bytes is None else f"{m.peak_rss_bytes / 2**20:.0f} MiB",
            _energy_cell(m),
        ]
        if m.batch_n:
            row += [f"{m.batch_n.median_ms:.3f}", f"{m.batch_n.throughput_ips:.1f}"]
        table.add_row(*row)
    out.print(table)


@app.command("inspect")
def inspect_cmd(model: Path = typer.Argument(...), json_out: Path | None = JsonOpt):
    """Inputs, outputs, opset, op counts and metadata of a model."""
    from qvision import api

    _check_json_path(json_out, [model])
    info = api.inspect_model(model)
    _print_info(info)
    _save_json(info, json_out, [model])


def _print_info(info) -> None:
    out.print(
        f"[bold]{info.path}[/]  opset {info.opset}, {info.parameters:,} parameters, {info.size_bytes / 1e6:.2f} MB"
    )
    for kind, items in (("input", info.inputs), ("output", info.outputs)):
        for i in items:
            out.print(f"  {kind} {i['name']}: {i['type']} {i['shape']}")
    out.print("  ops: " + ", ".join(f"{k}×{v}" for k, v in info.op_counts.items()))
    for k, v in info.metadata.items():
        out.print(f"  metadata {k}: {metadata_summary(v)}", markup=False, highlight=False)


def metadata_summary(value: str, width: int = 100) -> str:
    """One line for a metadata value: a list of lines (an OCR alphabet: thousands of
    characters, one per line) by its count and first entries; long text cut, with its
    length (the whole value is in --json)."""
    if "\n" in value.strip("\n"):
        lines = value.split("\n")
        head = ""
        for line in lines:
            item = f" {line!r}" if not line.strip() or len(line) > 1 else f" {line}"
            if cell_len(head + item) > width - 40:  # wide (CJK) characters take two cells
                head += " …"
                break
            head += item
        return f"{len(lines):,} lines:{head}"
    if len(value) <= width:
        return value
    return f"{value[: width - 20]}… ({len(value):,} characters)"


@app.command("normalize")
def normalize_cmd(
    model: Path = typer.Argument(...),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the normalized model."),
    alphabet: Path | None = AlphabetOpt,
    json_out: Path | None = JsonOpt,
):
    """Check a model and write its normal form: opset >= 13, weights as initializers, shapes
    inferred; --alphabet stores an OCR recognizer's dictionary in it."""
    from qvision import api

    _check_json_path(json_out, [model, output])
    info = api.normalize(model, output, alphabet=alphabet)
    _print_info(info)
    _save_json(info, json_out, [model, output])


@zoo_app.command("list")
def zoo_list(json_out: Path | None = JsonOpt):
    """The models the zoo can export offline."""
    from qvision.zoo import ZOO

    table = Table(title="qvision zoo")
    for col in ("name", "task", "description", "weights from"):
        table.add_column(col)
    for e in ZOO.values():
        table.add_row(e.name, e.task, e.description, e.source)
    out.print(table)
    if json_out:
        import json

        from qvision.fileio import write_text_atomic

        rows = [
            {
                "name": e.name,
                "task": e.task,
                "description": e.description,
                "source": e.source,
                "preprocess": e.preprocess.model_dump(),
            }
            for e in ZOO.values()
        ]
        write_text_atomic(
            json_out, json.dumps({"kind": "zoo-list", "models": rows}, indent=2) + "\n"
        )
        out.print(f"JSON results: {json_out}")


@zoo_app.command("export")
def zoo_export(
    name: str = typer.Argument(..., help="Zoo model name (see `qvision zoo list`)."),
    output: Path = typer.Option(..., "-o", "--output", help="ONNX file to write."),
    json_out: Path | None = JsonOpt,
):
    """Export a zoo model to ONNX, with its preprocessing in metadata."""
    from qvision import api

    _check_json_path(json_out, [output])
    res = api.export_zoo_model(name, output)
    out.print(f"wrote {res.path} ({res.size_bytes / 1e6:.2f} MB, sha256 {res.sha256[:12]}…)")
    _save_json(res, json_out, [output])


@data_app.command("manifest")
def data_manifest(
    folder: Path = typer.Argument(..., help="Image folder."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Write the manifest JSON here."
    ),
):
    """SHA-256 of every image (and its label), plus one digest for the whole set."""
    from qvision import api

    man = api.dataset_manifest(folder)
    out.print(f"{man.n} files, {len(man.classes)} classes, dataset sha256 {man.sha256}")
    if output:
        _save_json(man, output, [])


@app.command("report")
def report_cmd(
    results: list[Path] = typer.Argument(
        ..., help="JSON files from quantize --eval, bench, analyze, robustness, check-data."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Report folder to write."),
    max_drop: float | None = typer.Option(None, "--max-drop", help="Budget in points."),
):
    """Render saved results as report.html and MODEL_CARD.md."""
    from qvision.report.html import write_report
    from qvision.report.load import inputs_from_json

    out.print(f"report: {write_report(inputs_from_json(results, max_drop), output)}")


@app.command("sweep")
def sweep_cmd(
    config: Path = typer.Argument(
        ...,
        help="YAML: models, calib, data, and lists of targets, algorithms, weights "
        "(docs: README 'Sweeps and clusters').",
    ),
    out_dir: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for the models and sweep.json/html (default: sweep-out beside the config).",
    ),
    threads: int | None = ThreadsOpt,
    executor: str = ExecutorOpt,
    cpus_per_task: int = CpusPerTaskOpt,
    json_out: Path | None = JsonOpt,
):
    """Quantize every model × target × algorithm pipeline × weight format and score each
    against its float model on each data folder: one table."""
    from qvision import api
    from qvision.report.sweep_page import COLUMNS, cells

    _check_json_path(json_out, [config])
    with _progress("sweep pieces") as cb:
        res = api.sweep(
            config,
            out_dir,
            executor=executor,
            cpus_per_task=cpus_per_task,
            threads=threads,
            progress=cb,
        )
    table = Table(title=f"sweep: {len(res.rows)} rows")
    for col in COLUMNS:
        table.add_column(
            col, justify="left" if col in ("model", "target", "algorithms") else "right"
        )
    for row in cells(res):
        table.add_row(*row)
    out.print(table)
    out.print(
        f"models and results: {res.out} (sweep.html, sweep.json); {res.workers} "
        f"{res.executor} worker(s), {res.seconds:.0f} s"
    )
    _save_json(res, json_out, [config])


@app.command("robustness")
def robustness_cmd(
    fp32: Path = typer.Argument(..., help="Float ONNX model."),
    int8: Path = typer.Argument(..., help="Quantized ONNX model."),
    data: Path = typer.Option(..., "--data", help="Labelled images for --task."),
    task: str | None = typer.Option(
        None,
        "--task",
        help=" | ".join(ADAPTERS) + " (default: the model's qvision.task metadata, else "
        "classification).",
    ),
    corruptions: str | None = typer.Option(
        None,
        "--corruptions",
        help="Comma list (default all): dark, bright, contrast, "
        "gaussian-noise, defocus-blur, motion-blur, jpeg, occlusion, fog.",
    ),
    severities: str = typer.Option("1,2,3", "--severities", help="Comma list of 1, 2, 3."),
    preprocess: str | None = typer.Option(
        None, "--preprocess", help="imagenet | tf | FILE.json/yaml."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Use the first N images."),
    adversarial: int = typer.Option(
        0,
        "--adversarial",
        min=0,
        help="Also attack the first N images with FGSM and PGD (eps 1, 2, 4 /255), crafted on "
        "FP32 and through INT8 (classification; needs the torch extra).",
    ),
    threads: int | None = ThreadsOpt,
    executor: str = ExecutorOpt,
    cpus_per_task: int = CpusPerTaskOpt,
    json_out: Path | None = JsonOpt,
):
    """FP32 vs INT8 on corrupted images (lighting, contrast, noise, blur, JPEG, occlusion,
    fog) and, with --adversarial N, under FGSM/PGD attacks."""
    from qvision import api
    from qvision.eval.evaluate import model_task

    task = model_task(fp32, task)

    _check_json_path(json_out, [fp32, int8, data])
    try:
        sev = tuple(int(v) for v in severities.split(",") if v.strip())
    except ValueError:
        raise QVisionError(f"--severities takes integers, got '{severities}'") from None
    names = [c.strip() for c in corruptions.split(",") if c.strip()] if corruptions else None
    with _progress("corruptions") as cb:
        res = api.robustness(
            fp32,
            int8,
            data,
            task,
            preprocess,
            names,
            sev,
            limit,
            threads,
            progress=cb,
            adversarial_images=adversarial,
            executor=executor,
            cpus_per_task=cpus_per_task,
        )
    table = Table(title=f"{res.metric} on {res.images} images, FP32 vs INT8")
    k = len(res.rows) - 1
    for col in ("corruption", "severity", "FP32", "INT8", "gap pts", "gap 95 %", "agreement"):
        table.add_column(col, justify="left" if col == "corruption" else "right")
    for r in res.rows:
        ci = r.gap_joint_ci95 if r.corruption != "clean" else r.gap_ci95
        table.add_row(
            r.corruption,
            str(r.severity or ""),
            _pct(r.fp32),
            _pct(r.int8),
            f"{r.gap:+.2f}",
            "—" if ci is None else f"{ci[0]:+.1f} to {ci[1]:+.1f}",
            _pct(r.agreement),
        )
    out.print(table)
    if res.executor != "local":
        out.print(f"{len(res.rows)} settings ran as {res.executor} tasks ({res.workers} at once)")
    if k > 1 and any(r.gap_joint_ci95 for r in res.rows):
        out.print(f"gap intervals of the {k} corrupted settings hold jointly at 95 % (Bonferroni)")
    if res.adversarial:
        adv = Table(title="attack success rate (share of correctly classified images fooled)")
        for col in ("attack", "crafted on", "eps", "FP32", "INT8"):
            adv.add_column(col, justify="left" if col in ("attack", "crafted on") else "right")
        for a in res.adversarial:
            adv.add_row(
                a.attack,
                a.crafted_on,
                f"{a.eps * 255:.0f}/255",
                _pct(a.fp32_success),
                _pct(a.int8_success),
            )
        out.print(adv)
    _save_json(res, json_out, [fp32, int8, data])


@app.command("check-data")
def check_data_cmd(
    folder: Path = typer.Argument(..., help="Image folder (plain, class sub-folders, labels.txt)."),
    against: Path | None = typer.Option(
        None, "--against", help="Another set (e.g. evaluation) to check for leaked images."
    ),
    json_out: Path | None = JsonOpt,
):
    """Unreadable files, exact and near duplicates, leakage, class balance, sizes, modes."""
    from qvision import api

    _check_json_path(json_out, [folder, against])
    res = api.check_data(folder, against)
    table = Table(title=f"{res.root} ({res.files} files)")
    table.add_column("check")
    table.add_column("result", justify="right")
    table.add_column("example")
    rows = [
        ("unreadable", len(res.unreadable), res.unreadable[0] if res.unreadable else ""),
        (
            "exact duplicates",
            sum(len(g) - 1 for g in res.exact_duplicates),
            res.exact_duplicates[0] if res.exact_duplicates else "",
        ),
        (
            "near duplicates",
            len(res.near_duplicates),
            res.near_duplicates[0][:2] if res.near_duplicates else "",
        ),
    ]
    if res.against:
        rows.append(
            (
                "same file in --against",
                len(res.leaked_exact),
                res.leaked_exact[0] if res.leaked_exact else "",
            )
        )
        rows.append(
            (
                "near copy in --against",
                len(res.leaked_near),
                res.leaked_near[0][:2] if res.leaked_near else "",
            )
        )
    for name, n, ex in rows:
        table.add_row(
            name, str(n), " ~ ".join(map(str, ex)) if isinstance(ex, list | tuple) else str(ex)
        )
    if res.classes:
        table.add_row("classes", str(len(res.classes)), f"largest/smallest {res.imbalance:.1f}x")
    if res.sizes:
        w, h = res.sizes["width"], res.sizes["height"]
        table.add_row(
            "width / height", "", f"{w[0]}-{w[2]} (median {w[1]}) / {h[0]}-{h[2]} (median {h[1]})"
        )
    table.add_row("modes", "", ", ".join(f"{k}×{v}" for k, v in res.modes.items()))
    out.print(table)
    if res.problems:
        err.print(f"warning: {res.problems} problem(s) found")
    _save_json(res, json_out, [folder, against])


@data_app.command("synth-text")
def data_synth_text(
    output: Path = typer.Option(..., "-o", "--output", help="New folder to write."),
    kind: str = typer.Option(
        "lines", "--kind", help="lines (OCR recognition) | pages (OCR detection)."
    ),
    count: int = typer.Option(100, "--count", min=1, help="Number of images."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same images."),
    words: str | None = typer.Option(
        None, "--words", help="Words per line, MIN-MAX (lines; default 1-4)."
    ),
    font_size: str | None = typer.Option(
        None, "--font-size", help="Font size in pixels, MIN-MAX (lines; default 22-43)."
    ),
):
    """Render text images with exact labels (images/*.png + labels.txt)."""
    from qvision.data.synth_text import LINE_FONT, LINE_WORDS, parse_range, synth_lines, synth_pages

    makers = {"lines": synth_lines, "pages": synth_pages}
    if kind not in makers:
        raise QVisionError(f"--kind {kind}: choose lines or pages")
    if kind != "lines" and (words or font_size):
        raise QVisionError("--words and --font-size apply to --kind lines")
    if kind == "lines":
        w = parse_range(words, "--words") if words else LINE_WORDS
        f = parse_range(font_size, "--font-size") if font_size else LINE_FONT
        rows = synth_lines(output, count, seed, words=w, font_size=f)
    else:
        rows = synth_pages(output, count, seed)
    out.print(f"wrote {len(rows)} {kind} with labels to {output}")


@data_app.command("synth-docs")
def data_synth_docs(
    output: Path = typer.Option(..., "-o", "--output", help="New folder to write."),
    count: int = typer.Option(100, "--count", help="Number of pages."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same pages."),
):
    """Render paper pages with layout boxes in CDLA's 10 classes (images/*.png + COCO JSON)."""
    from qvision.data.synth_docs import synth_docs

    coco = synth_docs(output, count, seed)
    n, boxes = len(coco["images"]), len(coco["annotations"])
    out.print(f"wrote {n} pages with {boxes} layout boxes to {output}")


@app.command("sign")
def sign_cmd(
    model: Path = typer.Argument(..., help="ONNX model; its manifest and plan are signed too."),
    key: Path = typer.Option(..., "--key", help="EC private key, PEM (P-256, P-384 or P-521)."),
    signature: Path | None = typer.Option(
        None, "--signature", help="Signature to write (default: <model stem>.sig beside it)."
    ),
    password_env: str | None = typer.Option(
        None, "--password-env", help="Environment variable holding the key's password."
    ),
    json_out: Path | None = JsonOpt,
):
    """Sign a model, its external data, manifest and plan (OpenSSF model_signing, offline)."""
    from qvision.provenance import manifest_path
    from qvision.signing import default_signature, sign_model

    password = None
    if password_env is not None:
        password = os.environ.get(password_env)
        if password is None:
            raise QVisionError(f"--password-env: environment variable {password_env} is not set")
    sig = signature or default_signature(model)
    _check_json_path(json_out, [model, key, manifest_path(model)], [sig])
    res = sign_model(model, key, signature, password)
    out.print(
        f"signed {res.model} -> {res.signature}", markup=False, highlight=False, soft_wrap=True
    )
    _print_signed(res.files, Path(res.model).parent)
    for note in res.notes:
        out.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    _save_json(res, json_out, [model, key, *(f.path for f in res.files)], [sig])


@app.command("verify")
def verify_cmd(
    model: Path = typer.Argument(..., help="ONNX model signed with qvision sign."),
    key: Path = typer.Option(..., "--key", help="EC public key, PEM, of the signing key."),
    signature: Path | None = typer.Option(
        None, "--signature", help="Signature to check (default: <model stem>.sig beside it)."
    ),
    plan: Path | None = typer.Option(
        None, "--plan", help="Also check this plan file against the signed manifest."
    ),
    json_out: Path | None = JsonOpt,
):
    """Check a signed model, its manifest and plan; exit 1 if any signed byte differs."""
    from qvision.provenance import manifest_path
    from qvision.signing import verify_model

    _check_json_path(json_out, [model, key, signature, plan, manifest_path(model)])
    res = verify_model(model, key, signature, plan)
    if res.ok:
        out.print(
            f"verified {res.model} with {res.signature}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        _print_signed(res.files, Path(res.model).parent)
    for reason in res.reasons:
        err.print(f"verify failed: {reason}", markup=False, highlight=False, soft_wrap=True)
    for note in res.notes:
        out.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    signed = [f.path for f in res.files]
    _save_json(res, json_out, [model, key, res.signature, plan, manifest_path(model), *signed])
    if not res.ok:
        raise typer.Exit(1)


def _print_signed(files, folder: Path) -> None:
    names = [
        Path(f.path).relative_to(folder).as_posix() if folder in Path(f.path).parents else f.path
        for f in files
    ]
    width = max(map(len, names), default=0)
    for f, name in zip(files, names, strict=True):
        how = (
            "  (outside the folder: pinned by the signed manifest)"
            if f.covered_by == "manifest"
            else ""
        )
        out.print(
            f"  {f.role:<13} {name:<{width}}  sha256 {f.sha256[:16]}…{how}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@app.command("monitor")
def monitor_cmd(
    model: Path = typer.Argument(..., help="The deployed INT8 (QDQ) model."),
    reference: Path = typer.Option(..., "--reference", help="Its FP32 model."),
    images: Path = typer.Option(..., "--images", help="Folder of incoming images."),
    calib: Path | None = typer.Option(
        None,
        "--calib",
        help="Calibration images to measure the baseline on (default: the statistics "
        "quantize stored in the model's manifest).",
    ),
    follow: bool = typer.Option(
        False, "--follow", help="Keep reading images as they arrive, until Ctrl-C."
    ),
    idle_stop: float | None = typer.Option(
        None, "--idle-stop", help="With --follow: stop after this many seconds without an image."
    ),
    poll: float = typer.Option(1.0, "--poll", help="With --follow: seconds between looks."),
    sample: float = typer.Option(
        0.25, "--sample", help="Share of images also run through FP32 (agreement)."
    ),
    task: str | None = typer.Option(
        None,
        "--task",
        help="How agreement is scored: " + " | ".join(ADAPTERS) + " (default: the "
        "manifest's, the model's metadata, else classification).",
    ),
    decoder: str | None = typer.Option(
        None, "--decoder", help="Detection (or ocr-det) output spec as JSON."
    ),
    window: int = typer.Option(50, "--window", help="Images each judgement looks back over."),
    min_images: int = typer.Option(20, "--min-images", help="Images before the first judgement."),
    min_agreement: float = typer.Option(
        0.90, "--min-agreement", help="Alert when agreement's 95 % interval ends below this."
    ),
    max_saturation: float = typer.Option(
        0.02,
        "--max-saturation",
        help="Alert when a grid clips this share more than on calibration.",
    ),
    drift_p: float = typer.Option(
        1e-3, "--drift-p", help="Alert when the drift test's adjusted p-value is below this."
    ),
    metrics: str | None = typer.Option(
        None, "--metrics", help="HOST:PORT: serve Prometheus metrics while it runs."
    ),
    html: Path | None = typer.Option(
        None, "--html", help="Write a page of the window (rewritten every 10 s with --follow)."
    ),
    preprocess: str | None = typer.Option(
        None, "--preprocess", help="imagenet | tf | FILE.json/yaml."
    ),
    threads: int | None = ThreadsOpt,
    json_out: Path | None = JsonOpt,
):
    """Shadow an INT8 model against its FP32 reference: task agreement, saturation, input
    drift, latency; alerts as JSON lines on stdout; exit 1 when any alert fired."""
    import json

    from qvision import api
    from qvision.monitor import Thresholds

    if task is not None and task not in ADAPTERS:
        raise QVisionError(f"--task must be one of {', '.join(ADAPTERS)}, got '{task}'")
    if poll <= 0 or (idle_stop is not None and idle_stop < 0):
        raise QVisionError("--poll must be positive and --idle-stop not negative")
    limits = Thresholds(
        window=window,
        min_images=min_images,
        agreement=min_agreement,
        saturation=max_saturation,
        drift_p=drift_p,
    )
    _check_json_path(json_out, [model, reference, images, calib], [html] if html else [])

    def emit(a) -> None:
        print(
            json.dumps({"kind": a.kind, "message": a.message, "at_image": a.at_image}), flush=True
        )

    res = api.monitor(
        model, reference, images, calib, sample=sample, thresholds=limits, task=task,
        decoder=_json_arg(decoder, "--decoder"), metrics=metrics, html=html, follow=follow,
        poll=poll, idle_stop=idle_stop, preprocess=preprocess, threads=threads, on_alert=emit,
    )  # fmt: skip
    agree = "—" if res.agreement is None else f"{100 * res.agreement:.1f} %"
    err.print(
        f"{res.images} images, {res.sampled} also through FP32: {res.agreement_metric} "
        f"{agree}; {len(res.alerts)} alert(s)" + (f"; page: {html}" if html else ""),
        markup=False,
        highlight=False,
    )
    if json_out is not None:  # stdout carries the JSON lines: no note there
        from qvision.records import write_json

        write_json(res, json_out)
    if res.alerts:
        raise typer.Exit(1)


@app.command("demo")
def demo_cmd(
    out_dir: Path = typer.Option(
        Path("demo-out"), "--out", help="Folder for the model and results."
    ),
    json_out: Path | None = JsonOpt,
):
    """Quantize EfficientNet-Lite0 on bundled photos (fidelity, latency, evidence page) and
    the PP-OCRv4 recognizer on rendered text lines with labels (CER FP32 vs INT8); offline."""
    from qvision.demo import DEMO_MODEL, OCR_CALIB_LINES, OCR_LINES, OCR_MODEL, run_demo

    out.print(
        f"part 1: exporting zoo model {DEMO_MODEL}, quantizing it on bundled photos, comparing "
        f"FP32 and INT8 on the same photos; part 2: {OCR_MODEL} on {OCR_LINES} rendered text "
        f"lines with labels, calibrated on {OCR_CALIB_LINES} others…"
    )
    with _progress("demo") as cb:
        res, path = run_demo(out_dir, progress=cb)
    q = res.quantize
    out.print(
        f"INT8 model: {q.output} (target {q.target_reason}, method {q.method}, {q.seconds['total']:.1f} s)"
    )
    _print_predictions(res.eval, res.int8_eval)
    f = res.int8_eval.fidelity
    out.print(
        f"INT8 vs FP32 on the calibration photos themselves (unlabelled, n = {res.int8_eval.n}): "
        f"top-1 agreement {_pct(f.top1_agreement)} {_span(f.top1_agreement_ci95)}, "
        f"SQNR {'identical' if f.sqnr_db is None else f'{f.sqnr_db:.1f} dB'}, cosine {f.cosine:.4f}"
        " — a workflow check, not an accuracy figure"
    )
    _print_bench(res.bench)
    if res.ocr is not None:
        _print_demo_ocr(res.ocr)
    _save_json(res, json_out, [])
    out.print(f"[bold green]report:[/] {path}")


def _print_demo_ocr(r) -> None:
    """The demo's labelled figure: CER FP32 vs INT8 with n and the change's 95 % interval."""
    q = r.quantize
    out.print(
        f"{r.model.name} INT8: {q.output} (method {q.method}, {q.seconds['total']:.1f} s; "
        f"calibrated on {r.calib_lines} rendered lines, seed {r.calib_seed}; "
        f"part 2 took {r.seconds:.0f} s)"
    )
    table = Table(
        title=f"{r.model.name} on n = {r.n} rendered text lines with exact labels (seed {r.seed})"
    )
    for col in ("metric", "FP32", "INT8", "change (95 %)"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    change = "—"
    if r.cer_change_points is not None and r.cer_change_ci95 is not None:
        lo, hi = r.cer_change_ci95
        change = f"{r.cer_change_points:+.2f} pts [{lo:+.2f}, {hi:+.2f}]"
    table.add_row("CER (lower is better)", _pct(r.cer_fp32), _pct(r.cer_int8), change)
    em = "exact_match"
    if em in r.fp32.metrics and em in r.int8.metrics:
        table.add_row(
            "lines read exactly",
            f"{_pct(r.fp32.metrics[em])} {_span(r.fp32.metrics_ci95.get(em))}",
            f"{_pct(r.int8.metrics[em])} {_span(r.int8.metrics_ci95.get(em))}",
            "",
        )
    if r.int8.agreement is not None:
        table.add_row("lines INT8 reads as FP32 does", "", _pct(r.int8.agreement), "")
    out.print(table)


def main() -> None:
    """Entry point: user errors become one line on stderr, never a traceback.

    Typer handles usage errors itself (standalone mode) and exits with code 2.
    """
    debug = bool(os.environ.get("QVISION_DEBUG"))
    try:
        app()
    except QVisionError as exc:
        if debug:
            raise
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(2)
    except Exception as exc:  # anything unexpected: still one line, traceback on request
        if debug:
            raise
        err.print(
            f"error: internal error: {type(exc).__name__}: {exc} (set QVISION_DEBUG=1 for a traceback)",
            markup=False,
            highlight=False,
        )
        sys.exit(1)
