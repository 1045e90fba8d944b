"""Foundation acceptance: zoo accuracy on the ImageNet sample and interleaved latency.

Run: `make bench` (or `.venv/bin/python bench/foundation.py`). Writes bench/out/*.json
and the `foundation` section of BENCHMARKS.md.
"""

from __future__ import annotations

import sys
import time

from qvision import api
from qvision.records import write_json
from qvision.runtime.machine import cpu_info, versions

from common import OUT, require_imagenet, write_section

# Reference FP32 top-1 on eval, from the data set's README.
REFERENCE_TOP1 = {"mobilenetv2": 0.827, "efficientnet-lite0": 0.876}


def main() -> None:
    data = require_imagenet() / "eval"
    OUT.mkdir(parents=True, exist_ok=True)
    rows, paths = [], []
    for name, ref in REFERENCE_TOP1.items():
        path = OUT / f"{name}.onnx"
        t0 = time.perf_counter()
        api.export_zoo_model(name, path)
        export_s = time.perf_counter() - t0
        res = api.evaluate(path, data)
        write_json(res, OUT / f"eval-{name}.json")
        top1 = res.metrics["top1"]
        rows.append(
            (
                name,
                res.n,
                top1,
                res.metrics["top5"],
                ref,
                abs(top1 - ref) <= 0.01,
                export_s,
                res.seconds,
            )
        )
        paths.append(path)
        print(
            f"{name}: top1 {top1:.4f} (reference {ref}), top5 {res.metrics['top5']:.4f}",
            file=sys.stderr,
        )
    bench = api.benchmark(paths, batch=8, rounds=10, seconds=5.0)
    write_json(bench, OUT / "bench-zoo.json")

    cpu = cpu_info()
    v = versions()
    lines = [
        "## Foundation: zoo accuracy and latency",
        "",
        "Command: `make bench` (runs `.venv/bin/python bench/foundation.py`).",
        f"Machine: {cpu['name']}, {cpu['physical_cores']} physical cores, flags {', '.join(cpu['int8_flags'])}; "
        f"onnxruntime {v['onnxruntime']}, onnx {v['onnx']}, numpy {v['numpy']}.",
        "",
        "FP32 accuracy of the zoo exports on `imagenet-sample-1k/eval` (900 images), "
        "`qvision eval MODEL --data …/eval`:",
        "",
        "| model | images | top-1 | top-5 | reference top-1 | within 1 pt | export s | eval s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, n, top1, top5, ref, ok, export_s, eval_s in rows:
        lines.append(
            f"| {name} | {n} | {100 * top1:.2f} | {100 * top5:.2f} | {100 * ref:.1f} | {'yes' if ok else 'NO'} "
            f"| {export_s:.1f} | {eval_s:.1f} |"
        )
    lines += [
        "",
        f"Latency, `qvision bench mobilenetv2.onnx efficientnet-lite0.onnx --batch 8` "
        f"({bench.threads} threads, {bench.rounds} interleaved rounds; speedup relative to MobileNetV2):",
        "",
        "| model | size MB | b1 median ms | b1 p90 ms | speedup | b8 median ms | b8 img/s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in bench.models:
        bn = m.batch_n
        rss = "—" if m.peak_rss_bytes is None else f"{m.peak_rss_bytes / 2**20:.0f}"
        lines.append(
            f"| {m.path.rsplit('/', 1)[-1]} | {m.size_bytes / 1e6:.2f} | {m.median_ms:.2f} | {m.p90_ms:.2f} "
            f"| {m.speedup:.2f}× | {bn.median_ms:.2f} | {bn.throughput_ips:.1f} | {rss} |"
        )
    lines += [
        "",
        "Our preprocessing equals torchvision's `Resize(256)`/`CenterCrop(224)`/`Normalize` to 1e-6, "
        "and PyTorch on the same tensors gives the same top-1; the data set README's reference "
        "figures come from a slightly different decode/resize path (a few images of 900).",
    ]
    write_section("foundation", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
