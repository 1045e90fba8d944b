"""Recovery algorithms on the zoo classifiers: fidelity and top-1 with each pipeline.

Run: `make bench-recovery` (or `.venv/bin/python bench/recovery.py`). Calibrates on
imagenet-sample-1k/calib, evaluates on eval against the FP32 model. Writes
bench/out/recovery.json and the `recovery` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys

from qvision import api
from qvision.runtime.machine import cpu_info
from qvision.targets import detect

from common import OUT, require_imagenet, write_section

PIPELINES = ["none", "bias-correction", "weight-mse,bias-correction", "adaround,bias-correction"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mobilenetv2,efficientnet-lite0")
    ap.add_argument("--pipelines", default=";".join(PIPELINES))
    ap.add_argument("--weights", default="int8", help="int8 (W8A8) or int4 (W4A8)")
    args = ap.parse_args()
    root = require_imagenet()
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models.split(","):
        fp32 = OUT / f"{name}.onnx"
        if not fp32.exists():
            api.export_zoo_model(name, fp32)
        base = api.evaluate(fp32, root / "eval").metrics["top1"]
        for algos in args.pipelines.split(";"):
            out = OUT / f"{name}-rec.onnx"
            q = api.quantize(fp32, out, root / "calib", algos=algos, weights=args.weights)
            e = api.evaluate(out, root / "eval", reference=fp32)
            row = {
                "model": name,
                "algos": algos,
                "target": q.target,
                "method": q.method,
                "fp32_top1": base,
                "top1": e.metrics["top1"],
                "agreement": e.agreement,
                "sqnr_db": e.fidelity.sqnr_db,
                "kl_div": e.fidelity.kl_div,
                "quantize_s": q.seconds["total"],
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    tag = "W8A8" if args.weights == "int8" else "W4A8"
    (OUT / f"recovery-{tag}.json").write_text(json.dumps(rows, indent=1))
    target, why = detect()
    lines = [
        f"## Recovery algorithms ({tag})",
        "",
        f"Command: `.venv/bin/python bench/recovery.py --weights {args.weights}` (`make bench-recovery` runs both). "
        f"Machine: {cpu_info()['name']}, 2 cores; target **{target.name}** ({why}), method MSE. "
        f"`qvision quantize MODEL -o OUT --calib …/calib --weights {args.weights} --algo A`, then `qvision eval OUT --data …/eval --reference MODEL`.",
        "",
        "| model | --algo | top-1 % | drop pts | agreement % | SQNR dB | KL | quantize s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['algos']} | {100 * r['top1']:.2f} | {100 * (r['fp32_top1'] - r['top1']):.2f} "
            f"| {100 * r['agreement']:.1f} | {r['sqnr_db']:.2f} | {r['kl_div']:.4f} | {r['quantize_s']:.0f} |"
        )
    if args.weights == "int4":
        lines += [
            "",
            "INT4 weights are carried in INT8 tensors (−7…7, per channel), so these models run on the "
            "INT8 kernels at INT8 speed; the point is accuracy at 4-bit weight precision.",
        ]
        write_section(f"recovery-{tag}", "\n".join(lines))
        return
    lines += [
        "",
        "Top-1 on 900 images moves by ±0.3–0.5 points between equally good models (a few images); agreement, "
        "SQNR and KL to the FP32 model are the steadier measures of what each algorithm recovers. Issue 4's "
        "targets (drop ≤ 0.3, agreement ≥ 97 %) are met by EfficientNet-Lite0 with bias correction, not yet by "
        "MobileNetV2.",
    ]
    write_section("recovery", "\n".join(lines))


if __name__ == "__main__":
    main()
