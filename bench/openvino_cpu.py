"""OpenVINO check: qvision's OpenVINO profiles, run in OpenVINO's CPU plugin beside ONNX Runtime.

Run: `make bench-openvino` (or `.venv/bin/python bench/openvino_cpu.py [--models ...] [--limit N]`;
needs the `openvino` extra). Quantizes each zoo model W8A8 (target's default recovery) for
`openvino` (7-bit GEMM-backed weights) and `openvino-vnni` (8-bit), and for `openvino` with
the first depthwise convolution kept float; scores every model in ONNX Runtime and in
OpenVINO against ONNX Runtime's FP32 outputs; reads from OpenVINO's compiled graph the
precision each convolution runs in; times FP32 and INT8 in OpenVINO, interleaved. Writes
bench/out/openvino.json and the `openvino` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from qvision import api
from qvision.model.graph import GraphView
from qvision.model.ops import is_depthwise
from qvision.runtime.bench import time_calls
from qvision.runtime.machine import cpu_info
from qvision.targets import detect

from common import OUT, require_imagenet, write_section

THREADS = os.cpu_count() or 1


def _compile(core, path: Path):
    model = core.read_model(str(path))
    return core.compile_model(
        model, "CPU", {"INFERENCE_NUM_THREADS": THREADS, "INFERENCE_PRECISION_HINT": "f32"}
    )


def score(core, path: Path, fp32: Path, data: Path, backend: str, limit: int) -> dict:
    runner = None
    if backend == "openvino":
        compiled = _compile(core, path)
        out = compiled.output(0)

        def runner(x):
            return [compiled(x)[out]]

    e = api.evaluate(
        path,
        data,
        reference=fp32,
        batch_size=1,
        threads=THREADS,
        limit=limit,
        runner=runner,
    )
    return {
        "top1": 100 * e.metrics["top1"],
        "agreement": 100 * e.agreement,
        "sqnr_db": e.fidelity.sqnr_db,
    }


def precisions(core, path: Path) -> dict[str, int]:
    """How many convolutions / fully connected layers OpenVINO runs in each precision."""
    counts: Counter = Counter()
    for op in _compile(core, path).get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str) if "layerType" in info else ""
        if kind in ("Convolution", "GroupConvolution", "FullyConnected"):
            counts[info["runtimePrecision"].astype(str)] += 1
    return dict(counts)


def latency(core, paths: dict[str, Path], shape) -> dict[str, float]:
    """Batch-1 median ms per model, rounds interleaved (A, B, C, A, B, C...)."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    calls = [lambda c=_compile(core, p): c(x) for p in paths.values()]
    timings = time_calls(calls)
    return {k: t.stats()["median_ms"] for k, t in zip(paths, timings, strict=True)}


def first_depthwise(path: Path) -> str:
    model = onnx.load(str(path), load_external_data=False)
    view = GraphView(model)
    node = next((n for n in model.graph.node if is_depthwise(n, view)), None)
    if node is None:
        raise SystemExit(f"{path}: no depthwise convolution")
    return node.name


def main() -> None:
    import openvino as ov

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mobilenetv2,efficientnet-lite0")
    ap.add_argument("--limit", type=int, default=0, help="eval images (0: all)")
    a = ap.parse_args()
    data = require_imagenet()
    OUT.mkdir(parents=True, exist_ok=True)
    core = ov.Core()
    rows, lat, graphs = [], {}, {}
    for name in a.models.split(","):
        fp32 = OUT / f"{name}.onnx"
        if not fp32.exists():
            api.export_zoo_model(name, fp32)
        dw = first_depthwise(fp32)
        variants = {"FP32": fp32}
        for label, target, keep in (
            ("openvino (7-bit GEMM weights)", "openvino", ()),
            ("openvino-vnni (8-bit weights)", "openvino-vnni", ()),
            (f"openvino, first depthwise conv ({dw}) kept float", "openvino", (dw,)),
        ):
            out = OUT / f"{name}-{target}{'-kf' if keep else ''}.onnx"
            api.quantize(fp32, out, data / "calib", target=target, keep_float=keep)
            variants[label] = out
        for label, path in variants.items():
            graphs[(name, label)] = precisions(core, path)
            for backend in ("onnxruntime", "openvino"):
                r = score(core, path, fp32, data / "eval", backend, a.limit)
                rows.append({"model": name, "variant": label, "backend": backend, **r})
                print(json.dumps(rows[-1]), flush=True)
        _, inp = api.open_model(fp32)
        timed = {k: variants[k] for k in list(variants)[:3]}
        lat[name] = latency(core, timed, (1, inp.channels, inp.height, inp.width))
        print(name, lat[name], flush=True)
    (OUT / "openvino.json").write_text(
        json.dumps({"rows": rows, "latency_ms": lat, "openvino": ov.__version__}, indent=1)
    )
    write_section("openvino", report(rows, lat, graphs, a, ov.__version__))


def report(rows, lat, graphs, a, version: str) -> str:
    cpu = cpu_info()
    here = detect()[0].name
    n = "all 900" if not a.limit else f"the first {a.limit}"
    lines = [
        "## OpenVINO: the `openvino` profiles run in OpenVINO's CPU plugin",
        "",
        f"Command: `.venv/bin/python bench/openvino_cpu.py{f' --limit {a.limit}' if a.limit else ''}`"
        f" (`make bench-openvino`). Machine: {cpu['name']}, {THREADS} cores, "
        f"profile here {here}; OpenVINO {version}, CPU plugin, f32 inference hint. W8A8 with "
        "the target's default recovery (bias correction), calibration 100 images "
        f"(imagenet-sample-1k/calib), {n} `eval` images; agreement and SQNR against ONNX "
        "Runtime's FP32 outputs. 'Graph' counts the convolutions and fully connected layers "
        "of OpenVINO's compiled model by the precision they run in.",
        "",
        "| model | variant | ORT top-1 / agreement / SQNR | OpenVINO top-1 / agreement / SQNR | OpenVINO graph |",
        "|---|---|---|---|---|",
    ]
    by = {(r["model"], r["variant"], r["backend"]): r for r in rows}
    for model, variant in dict.fromkeys((r["model"], r["variant"]) for r in rows):
        cells = []
        for backend in ("onnxruntime", "openvino"):
            r = by[(model, variant, backend)]
            sq = "—" if r["sqnr_db"] is None or r["sqnr_db"] > 90 else f"{r['sqnr_db']:.2f}"
            cells.append(f"{r['top1']:.2f} / {r['agreement']:.1f} / {sq}")
        g = ", ".join(f"{v} {k}" for k, v in sorted(graphs[(model, variant)].items()))
        lines.append(f"| {model} | {variant} | {cells[0]} | {cells[1]} | {g} |")
    lines += ["", "OpenVINO latency, batch 1, median of interleaved rounds (ms):", ""]
    for model, t in lat.items():
        base = t["FP32"]
        lines.append(
            f"- {model}: " + ", ".join(f"{k} {v:.2f} ({base / v:.2f}×)" for k, v in t.items())
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
