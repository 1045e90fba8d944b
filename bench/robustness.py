"""Issue 6, robustness: FP32 vs qvision INT8 (default settings) top-1 under corruptions.

Run: `make bench-robustness` (or `.venv/bin/python bench/robustness.py [--limit 300]
[--adversarial 32] [--reuse]`). MobileNetV2 and EfficientNet-Lite0 from the zoo, calibrated
on imagenet-sample-1k/calib, scored on the first --limit images of eval under 9
corruptions x 3 severities (the same corrupted images for both models), then FGSM/PGD on
the first --adversarial images (eps 1, 2, 4 /255; crafted on FP32 and through the INT8
graph). --reuse keeps the corruption results of an earlier run. Writes
bench/out/robustness-<model>.json and the `robustness` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse

from qvision import api
from qvision.records import RobustnessResult

from common import OUT, require_imagenet, write_section

MODELS = ("mobilenetv2", "efficientnet-lite0")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--adversarial", type=int, default=32)
    ap.add_argument("--reuse", action="store_true", help="reuse bench/out/robustness-*.json")
    args = ap.parse_args()
    data = require_imagenet()
    OUT.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in MODELS:
        fp32, int8 = OUT / f"{name}.onnx", OUT / f"{name}-robust-int8.onnx"
        if not fp32.exists():
            api.export_zoo_model(name, fp32)
        saved = OUT / f"robustness-{name}.json"
        if args.reuse and saved.exists() and int8.exists():
            res = RobustnessResult.model_validate_json(saved.read_text())
        else:
            api.quantize(fp32, int8, data / "calib")
            res = api.robustness(fp32, int8, data / "eval", limit=args.limit)
        if args.adversarial:
            adv = api.robustness(
                fp32, int8, data / "eval", corruptions=[], adversarial_images=args.adversarial
            )
            res.adversarial = adv.adversarial
        saved.write_text(res.model_dump_json(indent=1))
        results[name] = res
    rows = {n: {(r.corruption, r.severity): r for r in res.rows} for n, res in results.items()}
    keys = [(r.corruption, r.severity) for r in results[MODELS[0]].rows]
    md = [
        "## Robustness: FP32 vs INT8 top-1 under corruptions",
        "",
        f"Command: `.venv/bin/python bench/robustness.py --limit {args.limit}` "
        "(`make bench-robustness`). qvision INT8 with default settings (target auto, "
        "mean-minmax, bias correction), calibrated on imagenet-sample-1k/calib (100); scored on "
        f"the first {args.limit} images of eval, the same corrupted images for both models. "
        "Gap: INT8 top-1 points lost vs FP32 on those images; agreement: INT8 picks FP32's class.",
        "",
        "| corruption | severity | "
        + " | ".join(f"{n} FP32 % | INT8 % | gap | agree %" for n in MODELS)
        + " |",
        "|---|---|" + "---|---|---|---|" * len(MODELS),
    ]
    for key in keys:
        cells = []
        for n in MODELS:
            r = rows[n][key]
            cells.append(
                f"{100 * r.fp32:.1f} | {100 * r.int8:.1f} | {r.gap:+.1f} | {100 * r.agreement:.1f}"
            )
        md.append(f"| {key[0]} | {key[1] or '—'} | " + " | ".join(cells) + " |")
    for n in MODELS:
        corrupted = [r for r in results[n].rows if r.corruption != "clean"]
        mean_gap = sum(r.gap for r in corrupted) / len(corrupted)
        worst = max(corrupted, key=lambda r: r.gap)
        clean = results[n].rows[0]
        md.append("")
        md.append(
            f"{n}: clean gap {clean.gap:+.2f} points; mean gap over the 27 corrupted settings "
            f"{mean_gap:+.2f}; largest {worst.gap:+.2f} ({worst.corruption} {worst.severity}); "
            f"{results[n].seconds:.0f} s."
        )
    if args.adversarial:
        md += [
            "",
            f"Adversarial attacks on the first {args.adversarial} eval images (L-infinity on [0, 1] "
            "pixels; FGSM one step, PGD 10 steps of eps/4 from a random start; crafted on the FP32 "
            "graph, or through the INT8 QDQ graph with straight-through rounding; every "
            "adversarial image scored by ONNX Runtime on both real models). Success: share of the "
            "images a model classified correctly that it gets wrong.",
            "",
            "| attack | crafted on | eps | "
            + " | ".join(f"{n} FP32 fooled % | INT8 fooled %" for n in MODELS)
            + " |",
            "|---|---|---|" + "---|---|" * len(MODELS),
        ]
        for i, a in enumerate(results[MODELS[0]].adversarial):
            cells = []
            for n in MODELS:
                r = results[n].adversarial[i]
                cells.append(f"{100 * r.fp32_success:.1f} | {100 * r.int8_success:.1f}")
            md.append(
                f"| {a.attack.upper()} | {a.crafted_on} | {a.eps * 255:.0f}/255 | "
                + " | ".join(cells)
                + " |"
            )
    write_section("robustness", "\n".join(md))


if __name__ == "__main__":
    main()
