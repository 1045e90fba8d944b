"""Issue 28: models users bring. The zoo's two classifiers exported the usual ways
(TorchScript and dynamo `torch.onnx.export`, fixed and dynamic batch, with and without
external data), each quantized by qvision's default and by ONNX Runtime's quantize_static
(its defaults, and per-channel), side by side in one run.

Run: `make bench-exports` (or `.venv/bin/python bench/exports.py [--models ...]
[--exports ts-fixed,...]`). Calibration: imagenet-sample-1k/calib (100 images); agreement
with FP32 and top-1 on eval (900); batch-1 latency interleaved per export (FP32, both ORT
models and qvision's in the same rounds). Writes bench/out/exports.json and the `exports`
section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from importlib import metadata
from pathlib import Path

from qvision import api
from qvision.runtime.machine import cpu_info, versions
from qvision.targets import detect
from qvision.zoo.registry import get_entry

from baselines import ort_quantize
from common import OUT, require_imagenet, write_section

EXPORTS = {  # name: (exporter, dynamic batch, external data)
    "ts-fixed": ("torchscript", False, False),
    "ts-dynamic": ("torchscript", True, False),
    "ts-dynamic-extdata": ("torchscript", True, True),
    "dynamo-fixed": ("dynamo", False, False),
    "dynamo-dynamic": ("dynamo", True, False),
    "dynamo-dynamic-extdata": ("dynamo", True, True),
}
QUANTIZERS = ("ORT default", "ORT per-channel", "qvision")
RATIO_LINE = 1.05  # qvision ms / ORT ms, the acceptance line


def export(name: str, kind: str, folder: Path) -> Path:
    """``name`` (a zoo classifier) exported as ``kind``, as a user would, without metadata."""
    from qvision.zoo import torch_models

    exporter, dynamic, external = EXPORTS[kind]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{kind}.onnx"
    net = getattr(torch_models, name.replace("-", "_"))()
    # onnx's default threshold: tensors of 1 KB or more go to the data file
    torch_models.export_file(net, path, exporter, dynamic, external=1024 if external else None)
    return path


def ci95(p: float, n: int) -> float:
    """Half-width of a normal-approximation 95 % interval of a proportion, in points."""
    return 196 * math.sqrt(max(p * (1 - p), 1e-12) / n)


def run_export(name: str, kind: str, calib: Path, evald: Path, seconds: float) -> dict:
    pre = get_entry(name).preprocess
    fp32 = export(name, kind, OUT / "exports")
    paths = {
        "ORT default": fp32.with_name(fp32.stem + ".ort.onnx"),
        "ORT per-channel": fp32.with_name(fp32.stem + ".ort-pc.onnx"),
        "qvision": fp32.with_name(fp32.stem + ".qv.onnx"),
    }
    quantize_s = {
        "ORT default": ort_quantize(fp32, paths["ORT default"], calib, False, pre, False),
        "ORT per-channel": ort_quantize(fp32, paths["ORT per-channel"], calib, False, pre),
    }
    t0 = time.perf_counter()
    res = api.quantize(fp32, paths["qvision"], calib, preprocess=pre)
    quantize_s["qvision"] = time.perf_counter() - t0
    row = {
        "model": name,
        "export": kind,
        "fp32_size": api.inspect_model(fp32).size_bytes,
        "qvision_float_nodes": res.float_nodes,
        "quantize_s": quantize_s,
        "evals": {},
    }
    fp32_eval = api.evaluate(fp32, evald, preprocess=pre)
    row["evals"]["FP32"] = {"top1": fp32_eval.metrics["top1"], "n": fp32_eval.n}
    for q, path in paths.items():
        e = api.evaluate(path, evald, reference=fp32, preprocess=pre)
        row["evals"][q] = {
            "top1": e.metrics["top1"],
            "agreement": e.agreement,
            "n": e.n,
            "sqnr_db": e.fidelity.sqnr_db if e.fidelity else None,
            "drop_points": e.fidelity.drop_points if e.fidelity else None,
            "drop_ci95_points": e.fidelity.drop_ci95_points if e.fidelity else None,
        }
        print(f"{name} {kind} {q}: {json.dumps(row['evals'][q])}", file=sys.stderr, flush=True)
    bench = api.benchmark([fp32, *paths.values()], rounds=10, seconds=seconds, memory=False)
    row["median_ms"] = dict(zip(["FP32", *paths], [m.median_ms for m in bench.models], strict=True))
    return row


def verdict(row: dict) -> tuple[float, bool]:
    ms, ev = row["median_ms"], row["evals"]
    ort_ms = min(ms["ORT default"], ms["ORT per-channel"])
    ort_agree = max(ev["ORT default"]["agreement"], ev["ORT per-channel"]["agreement"])
    ratio = ms["qvision"] / ort_ms
    return ratio, ratio <= RATIO_LINE and ev["qvision"]["agreement"] >= ort_agree


def _cell(row: dict, q: str) -> str:
    e, ms = row["evals"][q], row["median_ms"]
    a = e["agreement"]
    return f"{100 * a:.1f} ± {ci95(a, e['n']):.1f} / {ms['FP32'] / ms[q]:.2f}×"


def markdown(rows: list[dict], target: str, why: str) -> str:
    cpu, v = cpu_info(), versions()
    n = rows[0]["evals"]["FP32"]["n"] if rows else 0
    lines = [
        "## Models users bring: exports made the usual ways",
        "",
        "Command: `make bench-exports` (runs `.venv/bin/python bench/exports.py`). "
        f"Machine: {cpu['name']}, {cpu['physical_cores']} cores, flags {', '.join(cpu['int8_flags'])}; "
        f"onnxruntime {v['onnxruntime']}, torch {metadata.version('torch')}. `--target auto` picked "
        f"**{target}** ({why}).",
        "",
        "Each zoo classifier exported by `torch.onnx.export` with the TorchScript exporter "
        "(`dynamo=False`, opset 17) or the dynamo exporter, fixed or dynamic batch, weights in "
        "the file or in external data; no qvision metadata (preprocessing passed as a user "
        "would). Quantized by `qvision quantize MODEL -o OUT --calib …/calib --preprocess P` "
        "(defaults) and ONNX Runtime `quantize_static` (QDQ, MinMax) with its defaults "
        "(per-tensor) and per-channel, on the same 100 calibration images. Agreement: top-1 "
        f"agreement with the FP32 export on the {n} eval photos (± 95 % interval). Speed: batch 1, "
        "the four models of an export timed interleaved, median; × FP32 of the same export. "
        f"Met: qvision ms / the faster ORT ms ≤ {RATIO_LINE} and qvision agreement ≥ both ORT's.",
        "",
        "| model | export | FP32 top-1 % | ORT default: agree % / × FP32 | ORT per-channel: agree % / × FP32 "
        "| qvision: top-1 % / agree % / × FP32 | qvision ms ÷ ORT ms | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ev = r["evals"]
        ratio, ok = verdict(r)
        lines.append(
            f"| {r['model']} | {r['export']} | {100 * ev['FP32']['top1']:.2f} | {_cell(r, 'ORT default')} "
            f"| {_cell(r, 'ORT per-channel')} | {100 * ev['qvision']['top1']:.2f} / {_cell(r, 'qvision')} "
            f"| {ratio:.2f} | {'yes' if ok else '**no**'} |"
        )
    floats = {r["export"]: r["qvision_float_nodes"] for r in rows if r["qvision_float_nodes"]}
    lines += [
        "",
        "Ops qvision left in float: "
        + (json.dumps(floats) if floats else "none, in every export.")
        + " Quantize seconds and SQNR per model: bench/out/exports.json.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="efficientnet-lite0,mobilenetv2")
    ap.add_argument("--exports", default=",".join(EXPORTS))
    ap.add_argument("--seconds", type=float, default=4.0, help="timed seconds per model")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    target, why = detect()
    out_json = OUT / "exports.json"
    if args.report_only:
        write_section("exports", markdown(_load(out_json), target.name, why))
        return
    root = require_imagenet()
    # rows of earlier runs stay unless re-measured (a subset re-runs only its exports)
    done = {(r["model"], r["export"]): r for r in _load(out_json)}
    for name in args.models.split(","):
        for kind in args.exports.split(","):
            row = run_export(name, kind, root / "calib", root / "eval", args.seconds)
            done[(name, kind)] = row
            ratio, ok = verdict(row)
            print(f"{name} {kind}: qvision/ORT {ratio:.2f}, met {ok}", file=sys.stderr, flush=True)
            OUT.mkdir(parents=True, exist_ok=True)
            out_json.write_text(json.dumps(_ordered(done), indent=1))
    write_section("exports", markdown(_ordered(done), target.name, why))


def _load(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return []


def _ordered(done: dict) -> list[dict]:
    order = {k: i for i, k in enumerate(EXPORTS)}
    return sorted(done.values(), key=lambda r: (r["model"], order.get(r["export"], 99)))


if __name__ == "__main__":
    main()
