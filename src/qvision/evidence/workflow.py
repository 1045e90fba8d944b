"""One workflow from a float model to evidence: quantize (or autotune), evaluate FP32 and
INT8 on the same images, optionally benchmark, and write the evidence page. The CLI and the
demo run this; they only differ in what they print."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from qvision import api
from qvision.errors import QVisionError
from qvision.eval.evaluate import model_task, open_groups
from qvision.eval.tasks.adapters import ADAPTERS
from qvision.fileio import check_output_path
from qvision.provenance import manifest_path
from qvision.quant.config import QuantConfig, TuneOptions
from qvision.records import BenchResult, EvalResult, QuantizeEvalResult, QuantizeResult

# phase name -> a context manager giving that phase's progress callback (or None)
Phases = Callable[[str], AbstractContextManager]


def _quiet(_phase: str) -> AbstractContextManager:
    return nullcontext(None)


@dataclass
class Outcome:
    quantize: QuantizeResult
    fp32: EvalResult | None = None
    int8: EvalResult | None = None
    bench: BenchResult | None = None
    report: Path | None = None
    evidence: object | None = None  # the report's ReportInputs, to write the page again

    def record(self) -> QuantizeResult | QuantizeEvalResult:
        """What ``--json`` writes: the quantize result, with both evaluations when there are."""
        if self.fp32 is None or self.int8 is None:
            return self.quantize
        return QuantizeEvalResult(quantize=self.quantize, fp32=self.fp32, int8=self.int8)


def prove(
    model: str | Path,
    output: str | Path,
    calib: str | Path | None,
    config: QuantConfig | None = None,
    *,
    preprocess=None,
    plan: str | Path | None = None,
    plan_out: str | Path | None = None,
    tune: TuneOptions | None = None,
    eval_dir: str | Path | None = None,
    task: str | None = None,
    report: str | Path | None = None,
    report_parts: tuple[str, ...] | None = None,
    keep_predictions: bool = False,
    groups: str | Path | None = None,
    bench_seconds: float | None = None,
    threads: int | None = None,
    phases: Phases = _quiet,
    on_quantized: Callable[[QuantizeResult], None] | None = None,
    executor: str = "local",
    cpus_per_task: int = 1,
) -> Outcome:
    """Quantize ``model`` to ``output``; with ``eval_dir``, score FP32 and INT8 on it
    (labelled: the task metric; unlabelled: fidelity to FP32); with ``bench_seconds``,
    time both interleaved; with ``report``, write the evidence page there.

    Options are checked before any work; ``on_quantized`` sees the quantize result as soon
    as the model is written (the CLI prints it then). ``groups``: a CSV of image
    attributes for per-group harm of INT8 against FP32 on ``eval_dir``."""
    if report is not None and eval_dir is None:
        raise QVisionError("--report needs --eval DIR (the images to measure on)")
    from qvision.report.build import DEFAULT_PARTS

    report_parts = DEFAULT_PARTS if report_parts is None else report_parts
    inputs = [model, calib, plan, eval_dir]
    check_output_path(output, inputs, others=[plan_out])
    if plan_out is not None:
        check_output_path(plan_out, inputs, others=[output, manifest_path(output)])
    task = model_task(model, task)
    if task not in ADAPTERS:
        raise QVisionError(f"unknown task '{task}'; available: {', '.join(ADAPTERS)}")
    if groups is not None:  # a bad CSV fails before quantizing, not after
        if eval_dir is None:
            raise QVisionError("--groups needs --eval DIR (the images it names)")
        open_groups(groups, task, ADAPTERS[task].open(eval_dir), reference=True)
    with phases("quantizing") as cb:
        res = api.quantize(
            model,
            output,
            calib,
            config,
            preprocess=preprocess,
            plan=plan,
            plan_out=plan_out,
            tune=tune,
            threads=threads,
            progress=cb,
            executor=executor,
            cpus_per_task=cpus_per_task,
        )
    if eval_dir is not None and calib is not None:
        res.warnings.extend(api.leakage_warning(calib, eval_dir))
    if on_quantized:
        on_quantized(res)
    outcome = Outcome(res)
    if eval_dir is None:
        return outcome
    # labelled by the task's own truth (class folders, labels.txt, COCO JSON, masks);
    # unlabelled images: fidelity to the float model only (the float row is then trivial)
    adapter = ADAPTERS[task]
    labelled = adapter.has_truth(adapter.open(eval_dir))
    with phases("evaluating") as cb:
        outcome.fp32 = api.evaluate(
            model,
            eval_dir,
            task,
            reference=None if labelled else model,
            preprocess=preprocess,
            threads=threads,
            keep_predictions=keep_predictions,
            progress=cb,
        )
        outcome.int8 = api.evaluate(
            output,
            eval_dir,
            task,
            reference=model,
            preprocess=preprocess,
            threads=threads,
            keep_predictions=keep_predictions,
            progress=cb,
            groups=groups,
        )
    if bench_seconds is not None:
        outcome.bench = api.benchmark([model, output], threads=threads, seconds=bench_seconds)
    if report is not None:
        from qvision.report.build import gather
        from qvision.report.html import write_report

        evidence = gather(
            model,
            res,
            outcome.fp32,
            outcome.int8,
            calib,
            eval_dir,
            task,
            preprocess,
            threads,
            tune.max_drop if tune else None,
            bench=outcome.bench,
            parts=report_parts,
            phases=phases,
        )
        outcome.evidence = evidence
        outcome.report = write_report(evidence, report)
    return outcome
