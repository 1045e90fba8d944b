"""`qvision demo`: the main job on embedded defaults, offline, in two parts.

1. Photos: exports the EfficientNet-Lite0 zoo model, quantizes it to INT8 calibrating on
   real photos that pip packages ship, compares FP32 and INT8 on those same photos
   (predictions, agreement, SQNR), benchmarks both interleaved, writes every result as
   JSON and the evidence page (report/report.html: fidelity, latency, sensitivity,
   activation ranges, data checks, provenance). The photos carry no labels and are the
   calibration set too: agreement on them checks the workflow, it is no accuracy figure.
2. Text lines: a labelled measurement. Renders text lines with exact labels (one seed to
   evaluate, another to calibrate, so the sets are disjoint), quantizes the PP-OCRv4
   recognizer (zoo ``ppocr-rec``) with the default settings, and scores FP32 and INT8
   with the ``ocr-rec`` task: CER of each and the CER change with its 95 % interval,
   paired over the lines. BENCHMARKS.md has the same on 500 lines (bench/ocr.py).
"""

from __future__ import annotations

import shutil
import time
from contextlib import nullcontext
from pathlib import Path

from qvision import api
from qvision.data.synth_text import synth_lines
from qvision.evidence import prove
from qvision.records import DemoResult, OcrDemoResult, write_json
from qvision.zoo import ppocr
from qvision.zoo.sources import sample_photos

DEMO_MODEL = "efficientnet-lite0"
OCR_MODEL = "ppocr-rec"
# Lines as bench/ocr.py renders them (its first 80 evaluation lines are these), so the
# demo's figure can be read beside BENCHMARKS.md's; 32 calibration lines keep the part
# near 40 s on 2 shared cores
OCR_LINES, OCR_SEED = 80, 7
OCR_CALIB_LINES, OCR_CALIB_SEED = 32, 8
OCR_WORDS, OCR_FONT = (2, 5), (20, 44)


def prepare_photos(folder: Path) -> Path:
    """Copy the bundled photos into one folder (they live in several packages)."""
    folder.mkdir(parents=True, exist_ok=True)
    for package, src in sample_photos():
        dst = folder / f"{package}-{src.name}"
        if not dst.exists():
            shutil.copyfile(src, dst)
    return folder


def _render_lines(folder: Path, count: int, seed: int) -> Path:
    if folder.exists():  # the demo's own folder from an earlier run: render it afresh
        shutil.rmtree(folder)
    synth_lines(folder, count, seed, words=OCR_WORDS, font_size=OCR_FONT)
    return folder


def run_ocr_part(
    out_dir: str | Path,
    lines: int = OCR_LINES,
    calib_lines: int = OCR_CALIB_LINES,
    progress: api.Progress | None = None,
) -> OcrDemoResult:
    """The labelled measurement: PP-OCRv4 recognizer, FP32 vs INT8 CER on ``lines`` rendered
    lines, calibrated on ``calib_lines`` others, everything under ``out_dir``."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fp32 = out / f"{OCR_MODEL}.onnx"
    int8 = out / f"{OCR_MODEL}.int8.onnx"
    exported = api.export_zoo_model(OCR_MODEL, fp32)
    data = _render_lines(out / "lines", lines, OCR_SEED)
    calib = _render_lines(out / "calib-lines", calib_lines, OCR_CALIB_SEED)
    # the default method choice and recovery, as `qvision quantize` makes them
    q = api.quantize(fp32, int8, calib)
    q.warnings.extend(api.leakage_warning(calib, data))
    # FP32 against the labels only; INT8 against the labels and FP32 (the paired change)
    f = api.evaluate(fp32, data, "ocr-rec", progress=progress)
    i = api.evaluate(int8, data, "ocr-rec", reference=fp32, progress=progress)
    fid = i.fidelity
    change = ci = None
    if fid is not None and fid.drop_points is not None:
        # ocr-rec's 'points lost' is the CER rise; its interval is symmetric (delta method)
        change = fid.drop_points
        half = fid.drop_ci95_points or 0.0
        low = fid.drop_ci95_low if fid.drop_ci95_low is not None else change - half
        high = fid.drop_ci95_high if fid.drop_ci95_high is not None else change + half
        ci = (low, high)
    return OcrDemoResult(
        model=exported,
        quantize=q,
        fp32=f,
        int8=i,
        lines=lines,
        seed=OCR_SEED,
        calib_lines=calib_lines,
        calib_seed=OCR_CALIB_SEED,
        n=i.n,
        cer_fp32=f.metrics["cer"],
        cer_int8=i.metrics["cer"],
        cer_change_points=change,
        cer_change_ci95=ci,
        seconds=time.perf_counter() - t0,
    )


def ocr_note(r: OcrDemoResult) -> str:
    """One sentence for the evidence page."""
    change = ""
    if r.cer_change_points is not None and r.cer_change_ci95 is not None:
        lo, hi = r.cer_change_ci95
        change = (
            f", change {r.cer_change_points:+.2f} points (95 % interval {lo:+.2f} to {hi:+.2f}, "
            "paired over the lines)"
        )
    return (
        f"Labelled figure, another model: the PP-OCRv4 text recognizer ({OCR_MODEL}) on "
        f"n = {r.n} rendered text lines with exact labels (seed {r.seed}), calibrated on "
        f"{r.calib_lines} other lines (seed {r.calib_seed}): CER FP32 {100 * r.cer_fp32:.2f} % "
        f"vs INT8 {100 * r.cer_int8:.2f} %{change}. Details: results.json, key ocr."
    )


def run_demo(
    out_dir: str | Path,
    progress: api.Progress | None = None,
    seconds: float = 4.0,
    ocr_lines: int = OCR_LINES,
    ocr_calib_lines: int = OCR_CALIB_LINES,
) -> tuple[DemoResult, Path]:
    """Part 1, the quantize → evaluate → benchmark → report workflow of ``qvision quantize
    --eval --report`` on the zoo model and the bundled photos (unlabelled, and also the
    calibration set: the page shows fidelity, not accuracy or robustness, and flags the
    overlap); part 2, the labelled OCR measurement (``ocr_lines`` 0 skips it), noted on
    the same page."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if ocr_lines:  # a missing package fails now, not after the photo part
        ppocr.model_file("rec")
    model_path = out / f"{DEMO_MODEL}.onnx"
    exported = api.export_zoo_model(DEMO_MODEL, model_path)
    photos = prepare_photos(out / "photos")

    def phases(name: str):
        return nullcontext(progress if name == "evaluating" else None)

    done = prove(
        model_path,
        out / f"{DEMO_MODEL}.int8.onnx",
        photos,
        plan_out=out / "plan.json",
        eval_dir=photos,
        report=out / "report",
        keep_predictions=True,
        bench_seconds=seconds,
        phases=phases,
    )
    ocr = None
    if ocr_lines:
        ocr = run_ocr_part(out / "ocr", ocr_lines, ocr_calib_lines, progress)
        if done.evidence is not None:
            from qvision.report.html import write_report

            done.evidence.notes.append(ocr_note(ocr))
            write_report(done.evidence, out / "report")
    result = DemoResult(
        model=exported,
        quantize=done.quantize,
        eval=done.fp32,
        int8_eval=done.int8,
        bench=done.bench,
        ocr=ocr,
    )
    write_json(result, out / "results.json")
    return result, done.report
