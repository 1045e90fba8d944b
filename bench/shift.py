"""Issue 30, trust under shift: INT8 robustness with the calibration method before issue 30
(`mean-minmax`, always) and with today's default (the method whose INT8 follows FP32 best
on clean and shifted copies of calibration images, quant/shiftsafe.py), FP32 vs INT8 on
the same corrupted images.

- MobileNetV2 and EfficientNet-Lite0 (zoo), calibrated on imagenet-sample-1k/calib (100):
  agreement and top-1 drop on the 900 eval photos; top-1 under 9 corruptions x 3
  severities on the first --limit eval photos, each gap with its paired 95 % interval, per
  setting and jointly over the 27.
- The PP-OCRv4 detector at 640x480 (bench/ocr.py), calibrated on 50 rendered pages (seed
  8): hmean on --pages pages (seed 7), clean and under the same 27 settings.

Run: `make bench-shift` (or `.venv/bin/python bench/shift.py [--limit 300] [--pages 50]
[--reuse]`). --reuse keeps the results of an earlier run (bench/out/shift/*.json). Writes
the `shift` section of BENCHMARKS.md and the full per-setting table to
bench/out/shift/table.md.
"""

from __future__ import annotations

import argparse
import json
import time

from qvision import api
from qvision.data.synth_text import synth_pages
from qvision.records import EvalResult, RobustnessResult
from qvision.runtime.machine import cpu_info
from qvision.targets import detect

from common import OUT, require_imagenet, write_section

CLASSIFIERS = ("mobilenetv2", "efficientnet-lite0")
DETECTOR = "ppocr-det"
# "before": the method before issue 30; "default": the defaults now
VARIANTS = {"before": {"method": "mean-minmax"}, "default": {}}
BUDGET = 3.0  # points: a setting whose whole gap interval lies above it fails


def _pages(folder, n: int, seed: int):
    if not (folder / "labels.txt").exists():
        synth_pages(folder, n, seed)
    return folder


def _run(name, fp32, calib, data, task, variant, limit, reuse, eval_data=None):
    out = OUT / "shift"
    int8 = out / f"{name}-{variant}.onnx"
    saved = out / f"{name}-{variant}.json"
    if reuse and saved.exists() and int8.exists():
        d = json.loads(saved.read_text())
        return {
            "seconds": d["seconds"],
            "method": d["method"],
            "robust": RobustnessResult.model_validate(d["robust"]),
            "eval": d["eval"] and EvalResult.model_validate(d["eval"]),
        }
    t = time.perf_counter()
    q = api.quantize(fp32, int8, calib, **VARIANTS[variant])
    seconds = time.perf_counter() - t
    ev = api.evaluate(int8, eval_data, reference=fp32) if eval_data else None
    robust = api.robustness(fp32, int8, data, task=task, limit=limit)
    record = {
        "seconds": seconds,
        "method": q.method,
        "robust": robust.model_dump(mode="json"),
        "eval": ev and ev.model_dump(mode="json"),
    }
    saved.write_text(json.dumps(record))
    return {"seconds": seconds, "method": q.method, "robust": robust, "eval": ev}


def _summary(r: dict) -> dict:
    rows = r["robust"].rows
    corrupted = [x for x in rows if x.corruption != "clean"]
    worst = max(corrupted, key=lambda x: x.gap)
    above = [x for x in corrupted if x.gap_ci95 and x.gap_ci95[0] > BUDGET]
    return {
        "clean": rows[0],
        "mean_gap": sum(x.gap for x in corrupted) / len(corrupted),
        "worst": worst,
        "above": above,
        "over_budget": [x for x in corrupted if x.gap > BUDGET],
    }


def _interval(x) -> str:
    return f" [{x[0]:+.1f}, {x[1]:+.1f}]" if x else ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--pages", type=int, default=50)
    ap.add_argument("--reuse", action="store_true")
    args = ap.parse_args()
    root = require_imagenet()
    (OUT / "shift").mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for name in CLASSIFIERS:
        fp32 = OUT / f"{name}.onnx"
        if not fp32.exists():
            api.export_zoo_model(name, fp32)
        for v in VARIANTS:
            results[f"{name}|{v}"] = _run(
                name, fp32, root / "calib", root / "eval", "classification", v, args.limit,
                args.reuse, root / "eval",
            )  # fmt: skip
    det = OUT / "ppocr-det-640.onnx"
    if not det.exists():
        raise SystemExit("run bench/ocr.py first: it writes the 640x480 detector")
    pages = _pages(OUT / "shift" / f"pages-{args.pages}", args.pages, 7)
    calib = _pages(OUT / "ocr-calib-pages", 50, 8)
    for v in VARIANTS:
        results[f"{DETECTOR}|{v}"] = _run(
            DETECTOR, det, calib, pages, "ocr-det", v, None, args.reuse
        )
    prof, _ = detect()
    cpu = cpu_info()
    md = [
        "## Trust under shift: the calibration method before issue 30 vs the default now",
        "",
        f"Command: `.venv/bin/python bench/shift.py --limit {args.limit} --pages {args.pages}` "
        f"(`make bench-shift`). Machine: {cpu['name']}, {cpu['physical_cores']} cores; target "
        f"**{prof.name}**. INT8 with default settings and `--method mean-minmax` (before: "
        "always the target's method) or the default now (the target's method or `minmax`, "
        "whichever INT8 follows FP32 better on clean and shifted copies of calibration "
        "images; the method column says which). Classifiers: "
        "calibration on imagenet-sample-1k/calib (100), agreement and drop on all 900 eval "
        f"photos, corruptions on the first {args.limit}; detector: PP-OCRv4 at 640×480, "
        f"calibration on 50 rendered pages (seed 8), {args.pages} pages (seed 7). Gap: INT8 "
        "points lost against FP32 on the same corrupted images (top-1; hmean for the "
        "detector), its paired 95 % interval jointly over the 27 corrupted settings "
        "(Bonferroni) in brackets.",
        "",
        "| model | calibration | method | clean agreement % (900) | clean drop, pts (95 %) | "
        "clean gap | mean gap, 27 settings | largest gap (joint 95 %) | settings with the "
        f"gap interval above {BUDGET:.0f} pts |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        name, v = key.split("|")
        s = _summary(r)
        ev = r["eval"]
        agree = drop = "—"
        if ev is not None:
            f = ev.fidelity
            lo, hi = f.top1_agreement_ci95
            agree = f"{100 * f.top1_agreement:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
            drop = f"{f.drop_points:+.2f} [{f.drop_ci95_low:+.2f}, {f.drop_ci95_high:+.2f}]"
        w = s["worst"]
        above = (
            str(len(s["above"]))
            if w.gap_ci95
            else f"— (hmean; {len(s['over_budget'])} settings with a gap above {BUDGET:.0f})"
        )
        md.append(
            f"| {name} | {v} | {r['method']} | {agree} | {drop} | {s['clean'].gap:+.1f} | {s['mean_gap']:+.2f} | "
            f"{w.gap:+.1f} ({w.corruption} {w.severity}){_interval(w.gap_joint_ci95)} | "
            f"{above} |"
        )
    write_section("shift", "\n".join(md))
    # every setting, for docs/experiments.md
    keys = [(x.corruption, x.severity) for x in results[f"{DETECTOR}|before"]["robust"].rows]
    table = [
        "| corruption | severity | "
        + " | ".join(f"{k.split('|')[0]} {k.split('|')[1]}" for k in results)
        + " |",
        "|---|---|" + "---|" * len(results),
    ]
    for c, sev in keys:
        cells = []
        for r in results.values():
            x = next(y for y in r["robust"].rows if (y.corruption, y.severity) == (c, sev))
            cells.append(f"{100 * x.int8:.1f} ({x.gap:+.1f})")
        table.append(f"| {c} | {sev or '—'} | " + " | ".join(cells) + " |")
    (OUT / "shift" / "table.md").write_text("\n".join(table) + "\n")
    print("\n".join(md + [""] + table))


if __name__ == "__main__":
    main()
