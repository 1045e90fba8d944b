"""OCR: the PP-OCRv4 recognizer on rendered lines and the PP-OCRv4 detector on rendered
pages, qvision vs ONNX Runtime's quantize_static in one run (issues 5 and 28).

Run: `make bench-ocr` (or `.venv/bin/python bench/ocr.py [--lines 500] [--pages 200]`).
Recognition: --lines lines of 2-5 words at 20-44 px fonts (seed 7) to evaluate, 100 others
(seed 8) to calibrate; CER (with its change against FP32 and a 95 % interval, paired over
the lines), exact match, lines read as FP32 reads them; FP32 also with the original
PaddleOCR sizing (each line at its own width, batch 1) and with the 48x320 squeeze the zoo
used before. Detection: --pages 640x480 pages (seed 7), 50 others (seed 8) to calibrate;
precision, recall, hmean at IoU 0.5, box agreement with FP32. Both also as a
paddle2onnx-style export (opset 11, Identity chains, x*HardSigmoid(x), outputs without a
shape), quantized as given. Batch-1 latency timed interleaved. Writes bench/out/ocr.json and
the `ocr` and `ocr-det` sections of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import onnx
from onnx import helper

from qvision import api
from qvision.data.preprocess import METADATA_KEY, Preprocess
from qvision.data.synth_text import synth_lines, synth_pages
from qvision.errors import QVisionError
from qvision.model.load import constants_to_initializers
from qvision.model.rewrite import hardswish_chains, name_nodes
from qvision.runtime.bench import time_interleaved
from qvision.runtime.machine import cpu_info
from qvision.targets import detect
from qvision.zoo.registry import OCR_NORM, ZOO, build_model, set_metadata
from qvision.zoo.sources import package_file

from baselines import ort_quantize
from common import OUT, write_section

# The detector's zoo preprocessing letterboxes to 960x960; the pages are 640x480, so the
# bench feeds them at their own size (a multiple of 32, as DB needs).
PAGE_PRE = Preprocess(resize=(480, 640), resize_mode="letterbox", crop=None, **OCR_NORM)
REC_PRE = ZOO["ppocr-rec"].preprocess
# PaddleOCR's own sizing: each line as wide as itself (at least 320), no rounding, no cap
ORIGINAL_REC = REC_PRE.model_copy(update={"resize": (48, 100_000), "width_multiple": 1})
SQUEEZED_REC = Preprocess(resize=(48, 320), resize_mode="height", crop=None, **OCR_NORM)
WORDS, FONT = (2, 5), (20, 44)
REC_WIDTHS = ((48, 320), (48, 960))  # a short line, a long one


def p2o_style(kind: str, meta: dict[str, str]) -> Path:
    """The zoo model as paddle2onnx writes it at opset 11: weights as Constant nodes, an
    Identity after every Conv/Add/Mul, HardSwish as x * HardSigmoid(x), outputs without a
    shape. Same weights, so the same float outputs."""
    path = OUT / f"ppocr-{kind}-p2o.onnx"
    raw = onnx.load(
        str(
            package_file(
                "rapidocr_onnxruntime", f"models/ch_PP-OCRv4_{kind}_infer.onnx", "rapidocr"
            )
        )
    )
    constants_to_initializers(raw)
    name_nodes(raw)
    hardswish_chains(raw)  # the spelled-out chains as one op, then as paddle2onnx-11 spells it
    nodes = []
    for n in raw.graph.node:
        if n.op_type == "HardSwish":
            gate = f"{n.output[0]}__hsig"
            nodes += [
                helper.make_node(
                    "HardSigmoid", [n.input[0]], [gate], f"{n.name}_hs", alpha=0.1666667, beta=0.5
                ),
                helper.make_node("Mul", [n.input[0], gate], list(n.output), f"{n.name}_mul"),
            ]
        elif n.op_type in ("Conv", "Add", "Mul"):
            out = n.output[0]
            n.output[0] = f"{out}__pre"
            nodes += [n, helper.make_node("Identity", [n.output[0]], [out], f"{n.name}_id")]
        else:
            nodes.append(n)
    consts = [helper.make_node("Constant", [], [t.name], value=t) for t in raw.graph.initializer]
    del raw.graph.initializer[:], raw.graph.node[:], raw.graph.value_info[:]
    raw.graph.node.extend(consts + nodes)
    for o in raw.graph.output:
        o.type.tensor_type.ClearField("shape")
    for o in raw.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = 11
    set_metadata(raw, meta)
    onnx.save(raw, str(path))
    return path


def _quantize_all(fp32: Path, calib: Path) -> tuple[dict, dict]:
    stem = fp32.stem
    models, seconds = {"FP32": fp32}, {}
    for name, rr, suffix in (
        ("ORT quantize_static", False, "ort"),
        ("ORT quantize_static (reduce_range)", True, "ort-rr"),
    ):
        out = OUT / f"{stem}-{suffix}.onnx"
        try:
            seconds[name] = ort_quantize(fp32, out, calib, reduce_range=rr)
            models[name] = out
        except Exception as exc:  # ORT's own errors: the row says it failed, and why
            print(f"{name} fails on {fp32.name}: {exc}", file=sys.stderr, flush=True)
            seconds[name] = f"fails: {str(exc).splitlines()[0][:120]}"
    out = OUT / f"{stem}-qv.onnx"
    seconds["qvision"] = api.quantize(fp32, out, calib).seconds["total"]
    models["qvision"] = out
    return models, seconds


def _run(fp32: Path, data: Path, calib: Path, task: str, hws) -> list[dict]:
    models, seconds = _quantize_all(fp32, calib)
    rows = []
    for name, path in models.items():
        e = api.evaluate(path, data, task=task, reference=None if name == "FP32" else fp32)
        f = e.fidelity
        rows.append(
            {
                "quantizer": name,
                "path": str(path),
                "n": e.n,
                **e.metrics,
                "agreement": e.agreement,
                "drop_points": f.drop_points if f else None,
                "drop_ci95_points": f.drop_ci95_points if f else None,
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    paths = [str(p) for p in models.values()]
    for hw in hws:
        timings = time_interleaved(paths, 1, lambda _p, hw=hw: hw, None, 10, 4.0)
        for r, t in zip(rows, timings, strict=True):
            r.setdefault("latency_ms", {})[f"{hw[0]}x{hw[1]}"] = t.stats()["median_ms"]
    for r in rows:
        r["quantize_s"] = seconds.get(r["quantizer"])
    rows += [
        {"quantizer": name, "fails": why} for name, why in seconds.items() if isinstance(why, str)
    ]
    return rows


def _fp32_only(fp32: Path, data: Path, label: str, pre: Preprocess, batch: int) -> dict:
    e = api.evaluate(fp32, data, task="ocr-rec", preprocess=pre, batch_size=batch)
    return {"quantizer": label, "n": e.n, **e.metrics, "agreement": None}


def _fresh(folder: Path, make, n: int, seed: int, **kw) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    make(folder, n, seed, **kw)
    return folder


def _table(rows: list[dict], head: str, cells, hws, change: bool) -> list[str]:
    """One row per model; latency per input size, × the first row's (FP32's)."""
    base = rows[0]["latency_ms"]
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "fails" in r:
            out.append(f"| {r['quantizer']} | {r['fails']} |")
            continue
        agree = "—" if r["agreement"] is None else f"{100 * r['agreement']:.1f}"
        cells_ = [cells(r)]
        if change:
            d, ci = r.get("drop_points"), r.get("drop_ci95_points")
            cells_.append("—" if d is None else f"{d:+.2f} ± {ci:.2f}")
        cells_.append(agree)
        for hw in hws:
            key = f"{hw[0]}x{hw[1]}"
            ms = r.get("latency_ms", {}).get(key)
            cells_.append("—" if ms is None else f"{ms:.2f} ({base[key] / ms:.2f}×)")
        qs = r.get("quantize_s")
        cells_.append("—" if qs is None else f"{qs:.0f}")
        out.append(f"| {r['quantizer']} | " + " | ".join(cells_) + " |")
    return out


def recognition(args, machine: str) -> dict:
    rec = OUT / "ppocr-rec.onnx"
    rec.unlink(missing_ok=True)  # re-exported: its preprocessing metadata may have changed
    api.export_zoo_model("ppocr-rec", rec)
    kw = {"words": WORDS, "font_size": FONT}
    lines = _fresh(OUT / "ocr-lines", synth_lines, args.lines, 7, **kw)
    calib = _fresh(OUT / "ocr-calib", synth_lines, args.calib, 8, **kw)
    refs = [
        _fp32_only(rec, lines, "FP32, original sizing (each line its own width)", ORIGINAL_REC, 1),
        _fp32_only(rec, lines, "FP32, 48×320 squeeze (the zoo before)", SQUEEZED_REC, 32),
    ]
    rows = _run(rec, lines, calib, "ocr-rec", REC_WIDTHS)
    meta = {p.key: p.value for p in onnx.load(str(rec), load_external_data=False).metadata_props}
    p2o = _run(p2o_style("rec", meta), lines, calib, "ocr-rec", REC_WIDTHS)
    sizes = " and ".join(f"{h}×{w}" for h, w in REC_WIDTHS)
    head = (
        "| model | CER % | exact match % | CER change vs FP32, pts (95 %) | lines read as FP32 % "
        + "".join(f"| {h}×{w} ms (× FP32) " for h, w in REC_WIDTHS)
        + "| quantize s |"
    )

    def cells(r):
        return f"{100 * r['cer']:.2f} | {100 * r['exact_match']:.1f}"

    md = [
        "## OCR recognition: PP-OCRv4 recognizer on rendered lines",
        "",
        f"Command: `.venv/bin/python bench/ocr.py --lines {args.lines}` (`make bench-ocr`). "
        f"{machine}, default method and recovery. {rows[0]['n']} lines of {WORDS[0]}–{WORDS[1]} "
        f"words at {FONT[0]}–{FONT[1]} px fonts rendered with seed 7 (`qvision data synth-text "
        f"--words {WORDS[0]}-{WORDS[1]} --font-size {FONT[0]}-{FONT[1]}`), calibration on "
        f"{args.calib} others (seed 8). The zoo's preprocessing sizes each line to its own aspect "
        "ratio (48 rows, width rounded up to 32, 320 to 1280; a batch pads to its widest line). "
        f"Latency: batch 1 at {sizes}, median, interleaved.",
        "",
        "FP32 with other line sizing, same lines:",
        "",
        "| sizing | CER % | exact match % |",
        "|---|---|---|",
        *[f"| {r['quantizer']} | {cells(r)} |" for r in refs],
        f"| FP32, zoo sizing (batch 32) | {cells(rows[0])} |",
        "",
        *_table(rows, head, cells, REC_WIDTHS, True),
        "",
        "The same weights as a paddle2onnx-style export (opset 11, 196 Identity nodes, HardSwish "
        "as x·HardSigmoid(x), the output declared without a shape), quantized as given:",
        "",
        *_table(p2o, head, cells, REC_WIDTHS, True),
    ]
    write_section("ocr", "\n".join(md))
    return {"fp32_sizing": refs, "zoo": rows, "p2o": p2o}


def detection(args, machine: str) -> dict:
    det = OUT / "ppocr-det-640.onnx"
    meta = {METADATA_KEY: PAGE_PRE.to_json()}
    model = build_model("ppocr-det")
    set_metadata(model, meta)
    onnx.save(model, str(det))
    pages = _fresh(OUT / "ocr-pages", synth_pages, args.pages, 7)
    calib = _fresh(OUT / "ocr-calib-pages", synth_pages, args.calib_pages, 8)
    hws = ((480, 640),)
    rows = _run(det, pages, calib, "ocr-det", hws)
    p2o = _run(p2o_style("det", meta), pages, calib, "ocr-det", hws)
    head = (
        "| model | precision % | recall % | hmean % | box agreement (hmean vs FP32) % "
        "| 480×640 ms (× FP32) | quantize s |"
    )

    def cells(r):
        return f"{100 * r['precision']:.2f} | {100 * r['recall']:.2f} | {100 * r['hmean']:.2f}"

    md = [
        "## OCR detection: PP-OCRv4 detector on rendered pages",
        "",
        f"Command: `.venv/bin/python bench/ocr.py --pages {args.pages}` (`make bench-ocr`). "
        f"{machine}, default method and recovery. {rows[0]['n']} pages of 640×480 rendered with "
        f"seed 7 (`qvision data synth-text --kind pages`: 2–8 lines each plus non-text strokes), "
        f"calibration on {args.calib_pages} others (seed 8); DB post-processing (threshold 0.3, "
        "box score 0.6, unclip 1.5), one-to-one matches at IoU 0.5. Latency: batch 1 (480×640), "
        "median, interleaved.",
        "",
        *_table(rows, head, cells, hws, False),
        "",
        "The same weights as a paddle2onnx-style export (opset 11, 189 Identity nodes, HardSwish "
        "as x·HardSigmoid(x), the output declared without a shape), quantized as given:",
        "",
        *_table(p2o, head, cells, hws, False),
    ]
    write_section("ocr-det", "\n".join(md))
    return {"zoo": rows, "p2o": p2o}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=500)
    ap.add_argument("--calib", type=int, default=100)
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--calib-pages", type=int, default=50)
    ap.add_argument("--only", choices=["rec", "det"], default=None)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    target, why = detect()
    cpu = cpu_info()
    machine = (
        f"Machine: {cpu['name']}, {cpu['physical_cores']} cores, flags "
        f"{', '.join(cpu['int8_flags'])}; qvision target **{target.name}** ({why})"
    )
    results = {}
    if args.only in (None, "rec"):
        results["rec"] = recognition(args, machine)
    if args.only in (None, "det"):
        results["det"] = detection(args, machine)
    try:
        old = json.loads((OUT / "ocr.json").read_text())
    except (OSError, ValueError):
        old = {}
    (OUT / "ocr.json").write_text(json.dumps({**old, **results}, indent=1))


if __name__ == "__main__":
    try:
        main()
    except QVisionError as exc:
        raise SystemExit(f"error: {exc}") from None
