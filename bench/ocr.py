"""Issue 5, OCR recognition: PP-OCRv4 recognizer on rendered lines, qvision vs ONNX
Runtime's quantize_static in one run.

Run: `make bench-ocr` (or `.venv/bin/python bench/ocr.py [--lines 500]`). Renders
--lines lines (seed 7) to evaluate and 100 (seed 8) to calibrate, evaluates CER, exact
match and agreement with FP32, times batch-1 latency interleaved. Writes
bench/out/ocr.json and the `ocr` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

from qvision import api
from qvision.data.synth_text import synth_lines
from qvision.model import load_model
from qvision.runtime.bench import time_interleaved
from qvision.runtime.inputs import model_hw
from qvision.runtime.machine import cpu_info
from qvision.targets import detect

from baselines import ort_quantize
from common import OUT, write_section


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=500)
    ap.add_argument("--calib", type=int, default=100)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    fp32 = OUT / "ppocr-rec.onnx"
    if not fp32.exists():
        api.export_zoo_model("ppocr-rec", fp32)
    lines, calib = OUT / "ocr-lines", OUT / "ocr-calib"
    for d, n, seed in ((lines, args.lines, 7), (calib, args.calib, 8)):
        shutil.rmtree(d, ignore_errors=True)
        synth_lines(d, n, seed)
    models = {"FP32": fp32}
    seconds = {}
    out = OUT / "ppocr-rec-ort.onnx"
    seconds["ORT quantize_static"] = ort_quantize(fp32, out, calib, reduce_range=False)
    models["ORT quantize_static"] = out
    out = OUT / "ppocr-rec-ort-rr.onnx"
    seconds["ORT quantize_static (reduce_range)"] = ort_quantize(
        fp32, out, calib, reduce_range=True
    )
    models["ORT quantize_static (reduce_range)"] = out
    out = OUT / "ppocr-rec-qv.onnx"
    seconds["qvision"] = api.quantize(fp32, out, calib).seconds["total"]
    models["qvision"] = out
    rows = []
    for name, path in models.items():
        e = api.evaluate(path, lines, task="ocr-rec", reference=None if name == "FP32" else fp32)
        rows.append({"quantizer": name, "path": str(path), **e.metrics, "agreement": e.agreement})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    hw = model_hw(load_model(fp32, normalize=False))
    paths = [str(p) for p in models.values()]
    timings = time_interleaved(paths, 1, dict.fromkeys(paths, hw).get, None, 10, 4.0)
    for r, t in zip(rows, timings, strict=True):
        r["latency_ms"] = t.stats()["median_ms"]
        r["quantize_s"] = seconds.get(r["quantizer"])
    (OUT / "ocr.json").write_text(json.dumps(rows, indent=1))
    target, why = detect()
    base = rows[0]
    lines_md = [
        "## OCR recognition: PP-OCRv4 recognizer on rendered lines",
        "",
        f"Command: `.venv/bin/python bench/ocr.py --lines {args.lines}` (`make bench-ocr`). "
        f"Machine: {cpu_info()['name']}, 2 cores; qvision target **{target.name}** ({why}), default "
        f"method and recovery. {args.lines} lines rendered with seed 7 (`qvision data synth-text`), "
        f"calibration on {args.calib} others (seed 8). Latency: batch 1 (48×320), median, interleaved.",
        "",
        "| quantizer | CER % | exact match % | lines read as FP32 % | latency ms | vs FP32 | quantize s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        agree = "—" if r["agreement"] is None else f"{100 * r['agreement']:.1f}"
        qs = "—" if r["quantize_s"] is None else f"{r['quantize_s']:.0f}"
        lines_md.append(
            f"| {r['quantizer']} | {100 * r['cer']:.2f} | {100 * r['exact_match']:.1f} | {agree} "
            f"| {r['latency_ms']:.2f} | {base['latency_ms'] / r['latency_ms']:.2f}× | {qs} |"
        )
    write_section("ocr", "\n".join(lines_md))


if __name__ == "__main__":
    main()
