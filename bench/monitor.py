"""Issue 32: the deployment monitor, with the baseline `quantize` stored in the manifest
(no calibration folder at monitoring time) and `Monitor` defaults.

MobileNetV2 (zoo; default INT8 calibrated on the 100 `calib` photos; FP32 reference):
false alerts on the 900 clean `eval` photos streamed in folder order (sorted by class) and
shuffled (seed 0); detection delay for dark 25 % and each corruption of the robustness
set at severity 3 (the first 100 shuffled eval photos, shifted); peak RSS of a child
process streaming 1,000 and 10,000 synthetic images.

PP-OCR text detector (640x480 pages; default INT8 and mean-minmax INT8, calibrated on 50
rendered pages, seed 8): 200 clean rendered pages (seed 7) and the first 100 darkened to
25 %. Agreement is text box F1 against FP32's boxes.

Run: `make bench-monitor` (or `.venv/bin/python bench/monitor.py`). Writes the `monitor`
section of BENCHMARKS.md and bench/out/monitor.json.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import subprocess
import sys
import time

import numpy as np
import onnx
from PIL import ImageEnhance

from qvision import api
from qvision.data import image_folder, iter_batches
from qvision.data.preprocess import METADATA_KEY
from qvision.data.synth_text import synth_pages
from qvision.eval.robustness import corrupt
from qvision.eval.robustness.corruptions import CORRUPTIONS
from qvision.monitor import Monitor
from qvision.monitor.agreement import mean_interval
from qvision.runtime.machine import cpu_info
from qvision.targets import detect
from qvision.zoo.registry import build_model, set_metadata

from common import OUT, require_imagenet, write_section

SHIFTED = 100  # shifted images per setting
KINDS = ("drift", "saturation", "agreement")
HERE = OUT / "monitor"


def dark(im, _i):
    return ImageEnhance.Brightness(im).enhance(0.25)


def _stream(mon: Monitor, ds, pre, transform=None, limit=None) -> dict:
    """Feed ``ds`` in batches of 8; first alert per kind, agreement over every sampled image."""
    scores: list[float] = []
    score = mon.scorer.score

    def kept(a, b):
        scores.append(score(a, b))
        return scores[-1]

    mon.scorer = dataclasses.replace(mon.scorer, score=kept)
    t = time.perf_counter()
    for b in iter_batches(ds, pre, 8, transform=transform):
        mon.observe(b.inputs[: (limit - mon.seen) if limit else None])
        if limit and mon.seen >= limit:
            break
    first: dict[str, int] = {}
    for a in mon.alerts:
        first.setdefault(a.kind, a.at_image)
    return {
        "images": mon.seen,
        "alerts": first,
        "agreement": float(np.mean(scores)) if scores else None,
        "agreement_n": len(scores),
        "agreement_ci95": mean_interval(scores, mon.scorer.binary) if scores else None,
        "seconds": time.perf_counter() - t,
    }


def _shuffled(ds, seed: int = 0):
    out = copy.copy(ds)
    order = np.random.default_rng(seed).permutation(len(ds.samples))
    out.samples = [ds.samples[i] for i in order]
    return out


def _rss(n: int, model: str, int8: str) -> float:
    """Peak RSS (MiB) of a fresh process streaming n synthetic batch-1 images."""
    code = f"""
import resource, numpy as np
from qvision.monitor import Monitor
from qvision.monitor.agreement import mean_interval
rng = np.random.default_rng(0)
mon = Monitor({int8!r}, {model!r}, sample=0.05)
x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
for i in range({n}):
    mon.observe(x)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def classification() -> dict:
    data = require_imagenet()
    model = OUT / "mobilenetv2.onnx"
    if not model.exists():
        api.export_zoo_model("mobilenetv2", model)
    int8 = HERE / "mobilenetv2.int8.onnx"
    q = api.quantize(model, int8, data / "calib")
    proto, inp = api.open_model(model)
    pre = api.resolve_preprocess(proto, None, inp, model)
    ev = image_folder(data / "eval")
    mixed = _shuffled(ev)

    def fresh() -> Monitor:
        return Monitor(str(int8), str(model))  # the baseline from the manifest

    clean = {"folder order": _stream(fresh(), ev, pre), "shuffled": _stream(fresh(), mixed, pre)}
    print(clean, flush=True)
    delays = {}
    settings = [("dark 25 %", dark)] + [(f"{n} 3", corrupt(n, 3)) for n in CORRUPTIONS]
    for label, tf in settings:
        delays[label] = _stream(fresh(), mixed, pre, tf, SHIFTED)
        print(label, delays[label]["alerts"], flush=True)
    rss = {n: _rss(n, str(model), str(int8)) for n in (1000, 10000)}
    return {
        "method": q.method,
        "baseline_s": q.seconds.get("monitor-baseline"),
        "clean": clean,
        "delays": delays,
        "rss_mib": rss,
    }


def _pages(folder, n: int, seed: int):
    if not (folder / "labels.txt").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        synth_pages(folder, n, seed)
    return folder


def text_detector() -> dict:
    from ocr import PAGE_PRE

    det = OUT / "ppocr-det-640.onnx"
    if not det.exists():
        model = build_model("ppocr-det")
        set_metadata(model, {METADATA_KEY: PAGE_PRE.to_json()})
        onnx.save(model, str(det))
    pages = image_folder(_pages(HERE / "pages", 200, 7))
    calib = _pages(HERE / "calib-pages", 50, 8)
    out = {}
    for label, method in (("default", None), ("mean-minmax", "mean-minmax")):
        int8 = HERE / f"det-{label}.int8.onnx"
        q = api.quantize(det, int8, calib, method=method, task="ocr-det")
        row = {"method": q.method, "baseline_s": q.seconds.get("monitor-baseline")}
        row["clean"] = _stream(Monitor(str(int8), str(det)), pages, PAGE_PRE)
        row["dark"] = _stream(Monitor(str(int8), str(det)), pages, PAGE_PRE, dark, SHIFTED)
        print(label, row, flush=True)
        out[label] = row
    return out


def _alerts(first: dict) -> str:
    return ", ".join(f"{k} at image {v}" for k, v in first.items()) or "none"


def _agree(r: dict) -> str:
    if r["agreement"] is None:
        return "—"
    lo, hi = r["agreement_ci95"]
    return f"{100 * r['agreement']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] (n {r['agreement_n']})"


def section(cls: dict, det: dict) -> str:
    machine = f"{cpu_info().get('name', '?')}, 2 cores, `--target auto` → {detect()[0].name}"
    c = cls["clean"]
    lines = [
        "## Deployment monitor",
        "",
        f"Command: `make bench-monitor`. Machine: {machine}. The baseline comes from the "
        "manifest `quantize` wrote (no calibration folder at monitoring time); `Monitor` "
        "defaults: window 50, alerts from 20 images, 25 % of images also run in FP32, "
        "saturation = a grid clipping 2 points more than on calibration and a one-sided "
        "Mann–Whitney p < 1e-3 (Bonferroni), drift = KS p < 1e-3 (Bonferroni).",
        "",
        f"**MobileNetV2**, default INT8 ({cls['method']}) on the 100 `calib` photos; "
        f"the baseline took {cls['baseline_s']:.1f} s of the quantize. Agreement is top-1 "
        "with FP32 over the stream's sampled images (95 % interval, n).",
        "",
        "| clean eval stream | images | alerts | agreement % | images/s |",
        "|---|---|---|---|---|",
    ]
    for k, r in c.items():
        lines.append(
            f"| {k} | {r['images']} | {_alerts(r['alerts'])} | {_agree(r)} "
            f"| {r['images'] / r['seconds']:.0f} |"
        )
    lines += [
        "",
        "In folder order the stream is one class after another: the window's colour "
        "statistics differ from the calibration mix, and the drift test says so (a real "
        "shift in what the model sees, not a fault of the model).",
        "",
        f"Detection delay: image count at the first alert of each kind, the first {SHIFTED} "
        "shuffled eval photos shifted (— none within them).",
        "",
        "| shift | " + " | ".join(KINDS) + " | agreement % |",
        "|---|" + "---|" * (len(KINDS) + 1),
    ]
    for label, r in cls["delays"].items():
        cells = " | ".join(str(r["alerts"].get(k, "—")) for k in KINDS)
        lines.append(f"| {label} | {cells} | {_agree(r)} |")
    rss = cls["rss_mib"]
    lines += [
        "",
        f"Peak RSS streaming synthetic images: {rss[1000]:.0f} MiB after 1,000, "
        f"{rss[10000]:.0f} MiB after 10,000 ({100 * (rss[10000] / rss[1000] - 1):+.1f} %).",
        "",
        "**PP-OCR text detector** (480×640 pages), calibrated on 50 rendered pages (seed 8); "
        "200 rendered pages (seed 7), and the first 100 of them darkened to 25 %. Agreement "
        "is text box F1 against FP32's boxes.",
        "",
        "| INT8 | clean: alerts | clean: agreement % | dark: alerts | dark: agreement % |",
        "|---|---|---|---|---|",
    ]
    for label, r in det.items():
        lines.append(
            f"| {label} ({r['method']}) | {_alerts(r['clean']['alerts'])} | {_agree(r['clean'])} "
            f"| {_alerts(r['dark']['alerts'])} | {_agree(r['dark'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    cls = classification()
    det = text_detector()
    result = {"classification": cls, "text_detector": det}
    (OUT / "monitor.json").write_text(json.dumps(result, indent=1, default=str))
    body = section(cls, det)
    write_section("monitor", body)
    print(body)


if __name__ == "__main__":
    main()
