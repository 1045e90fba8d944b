"""Issue 5, OCR: the PP-OCRv4 recognizer on rendered lines and the PP-OCRv4 detector on
rendered pages, qvision vs ONNX Runtime's quantize_static in one run.

Run: `make bench-ocr` (or `.venv/bin/python bench/ocr.py [--lines 500] [--pages 200]`).
Recognition: --lines lines (seed 7) to evaluate, 100 others (seed 8) to calibrate; CER,
exact match, lines read as FP32 reads them. Detection: --pages 640x480 pages (seed 7), 50
others (seed 8) to calibrate; precision, recall, hmean at IoU 0.5, box agreement with FP32.
Batch-1 latency timed interleaved. Writes bench/out/ocr.json and the `ocr` and `ocr-det`
sections of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

import onnx

from qvision import api
from qvision.data.preprocess import METADATA_KEY, Preprocess
from qvision.data.synth_text import synth_lines, synth_pages
from qvision.model import load_model
from qvision.runtime.bench import time_interleaved
from qvision.runtime.inputs import model_hw
from qvision.runtime.machine import cpu_info
from qvision.targets import detect
from qvision.zoo.registry import OCR_NORM, build_model, set_metadata

from baselines import ort_quantize
from common import OUT, write_section

# The detector's zoo preprocessing letterboxes to 960x960; the pages are 640x480, so the
# bench feeds them at their own size (a multiple of 32, as DB needs).
PAGE_PRE = Preprocess(resize=(480, 640), resize_mode="letterbox", crop=None, **OCR_NORM)


def _quantize_all(fp32, calib) -> tuple[dict, dict]:
    stem = fp32.stem
    models, seconds = {"FP32": fp32}, {}
    for name, rr, suffix in (
        ("ORT quantize_static", False, "ort"),
        ("ORT quantize_static (reduce_range)", True, "ort-rr"),
    ):
        out = OUT / f"{stem}-{suffix}.onnx"
        seconds[name] = ort_quantize(fp32, out, calib, reduce_range=rr)
        models[name] = out
    out = OUT / f"{stem}-qv.onnx"
    seconds["qvision"] = api.quantize(fp32, out, calib).seconds["total"]
    models["qvision"] = out
    return models, seconds


def _run(fp32, data, calib, task) -> list[dict]:
    models, seconds = _quantize_all(fp32, calib)
    rows = []
    for name, path in models.items():
        e = api.evaluate(path, data, task=task, reference=None if name == "FP32" else fp32)
        rows.append({"quantizer": name, "path": str(path), **e.metrics, "agreement": e.agreement})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    hw = model_hw(load_model(fp32, normalize=False))
    paths = [str(p) for p in models.values()]
    timings = time_interleaved(paths, 1, dict.fromkeys(paths, hw).get, None, 10, 4.0)
    for r, t in zip(rows, timings, strict=True):
        r["latency_ms"] = t.stats()["median_ms"]
        r["quantize_s"] = seconds.get(r["quantizer"])
    return rows


def _fresh(folder, make, n, seed):
    shutil.rmtree(folder, ignore_errors=True)
    make(folder, n, seed)
    return folder


def _table(rows, head: str, cells) -> list[str]:
    base = rows[0]
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        agree = "—" if r["agreement"] is None else f"{100 * r['agreement']:.1f}"
        qs = "—" if r["quantize_s"] is None else f"{r['quantize_s']:.0f}"
        out.append(
            f"| {r['quantizer']} | {cells(r)} | {agree} | {r['latency_ms']:.2f} "
            f"| {base['latency_ms'] / r['latency_ms']:.2f}× | {qs} |"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=500)
    ap.add_argument("--calib", type=int, default=100)
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--calib-pages", type=int, default=50)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    target, why = detect()
    machine = f"Machine: {cpu_info()['name']}, 2 cores; qvision target **{target.name}** ({why})"

    rec = OUT / "ppocr-rec.onnx"
    if not rec.exists():
        api.export_zoo_model("ppocr-rec", rec)
    lines = _fresh(OUT / "ocr-lines", synth_lines, args.lines, 7)
    rows = _run(rec, lines, _fresh(OUT / "ocr-calib", synth_lines, args.calib, 8), "ocr-rec")
    md = [
        "## OCR recognition: PP-OCRv4 recognizer on rendered lines",
        "",
        f"Command: `.venv/bin/python bench/ocr.py --lines {args.lines}` (`make bench-ocr`). "
        f"{machine}, default method and recovery. {args.lines} lines rendered with seed 7 "
        f"(`qvision data synth-text`), calibration on {args.calib} others (seed 8). "
        "Latency: batch 1 (48×320), median, interleaved.",
        "",
        *_table(
            rows,
            "| quantizer | CER % | exact match % | lines read as FP32 % | latency ms | vs FP32 | quantize s |",
            lambda r: f"{100 * r['cer']:.2f} | {100 * r['exact_match']:.1f}",
        ),
    ]
    write_section("ocr", "\n".join(md))

    det = OUT / "ppocr-det-640.onnx"
    if not det.exists():
        model = build_model("ppocr-det")
        set_metadata(model, {METADATA_KEY: PAGE_PRE.to_json()})
        onnx.save(model, str(det))
    pages = _fresh(OUT / "ocr-pages", synth_pages, args.pages, 7)
    calib = _fresh(OUT / "ocr-calib-pages", synth_pages, args.calib_pages, 8)
    det_rows = _run(det, pages, calib, "ocr-det")
    md = [
        "## OCR detection: PP-OCRv4 detector on rendered pages",
        "",
        f"Command: `.venv/bin/python bench/ocr.py --pages {args.pages}` (`make bench-ocr`). "
        f"{machine}, default method and recovery. {args.pages} pages of 640×480 rendered with "
        f"seed 7 (`qvision data synth-text --kind pages`: 2–8 lines each plus non-text strokes), "
        f"calibration on {args.calib_pages} others (seed 8); DB post-processing (threshold 0.3, "
        "box score 0.6, unclip 1.5), one-to-one matches at IoU 0.5. Latency: batch 1 (480×640), "
        "median, interleaved.",
        "",
        *_table(
            det_rows,
            "| quantizer | precision % | recall % | hmean % | box agreement (hmean vs FP32) % "
            "| latency ms | vs FP32 | quantize s |",
            lambda r: (
                f"{100 * r['precision']:.2f} | {100 * r['recall']:.2f} | {100 * r['hmean']:.2f}"
            ),
        ),
    ]
    write_section("ocr-det", "\n".join(md))
    (OUT / "ocr.json").write_text(json.dumps({"rec": rows, "det": det_rows}, indent=1))


if __name__ == "__main__":
    main()
