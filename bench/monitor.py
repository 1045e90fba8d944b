"""Issue 32: the deployment monitor on MobileNetV2 (zoo, default INT8 calibrated on the 100
`calib` photos, FP32 reference). False alerts: the 900 clean `eval` photos streamed once.
Detection delay: for each corruption at severity 3 (and dark 25 %), the first 100 eval
photos corrupted; the image count at the first alert of each kind (— none). Memory: peak
RSS of a child process streaming 1,000 and 10,000 synthetic images (random tensors; the
monitor's windows are fixed-size, so memory should not grow).

Run: `make bench-monitor` (or `.venv/bin/python bench/monitor.py`). Writes the `monitor`
section of BENCHMARKS.md and bench/out/monitor.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
from PIL import ImageEnhance

from qvision import api
from qvision.data import image_folder, iter_batches
from qvision.eval.robustness import corrupt
from qvision.eval.robustness.corruptions import CORRUPTIONS
from qvision.monitor import Monitor
from qvision.runtime.machine import cpu_info
from qvision.targets import detect

from common import OUT, require_imagenet, write_section

SHIFTED = 100  # corrupted images per setting


def _stream(mon: Monitor, ds, pre, transform=None, limit=None) -> dict[str, int]:
    for b in iter_batches(ds, pre, 8, transform=transform):
        mon.observe(b.inputs)
        if limit and mon.seen >= limit:
            break
    first: dict[str, int] = {}
    for a in mon.alerts:
        first.setdefault(a.kind, a.at_image)
    return first


def _rss(n: int, model: str, int8: str) -> float:
    """Peak RSS (MiB) of a fresh process streaming n synthetic batch-1 images."""
    code = f"""
import resource, numpy as np
from qvision.monitor import Monitor
rng = np.random.default_rng(0)
ref = rng.standard_normal((32, 3, 224, 224)).astype(np.float32)
mon = Monitor({int8!r}, {model!r}, ref, sample=0.05)
x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
for i in range({n}):
    mon.observe(x)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def main() -> None:
    data = require_imagenet()
    model = OUT / "mobilenetv2.onnx"
    if not model.exists():
        api.export_zoo_model("mobilenetv2", model)
    int8 = OUT / "monitor" / "mobilenetv2.int8.onnx"
    int8.parent.mkdir(parents=True, exist_ok=True)
    q = api.quantize(model, int8, data / "calib")
    proto, inp = api.open_model(model)
    pre = api.resolve_preprocess(proto, None, inp, model)
    ref = np.concatenate([b.inputs for b in iter_batches(image_folder(data / "calib"), pre, 8)])
    ev = image_folder(data / "eval")

    def fresh() -> Monitor:
        return Monitor(str(int8), str(model), ref)

    t = time.perf_counter()
    clean_mon = fresh()
    clean = _stream(clean_mon, ev, pre)
    clean_s = time.perf_counter() - t
    delays = {}
    settings = [("dark 25 %", lambda im, _i: ImageEnhance.Brightness(im).enhance(0.25))]
    settings += [(f"{name} 3", corrupt(name, 3)) for name in CORRUPTIONS]
    for label, tf in settings:
        delays[label] = _stream(fresh(), ev, pre, tf, SHIFTED)
        print(label, delays[label], flush=True)
    rss = {n: _rss(n, str(model), str(int8)) for n in (1000, 10000)}
    result = {
        "method": q.method,
        "clean": {"images": clean_mon.seen, "alerts": clean, "seconds": clean_s},
        "delays": delays,
        "rss_mib": rss,
    }
    (OUT / "monitor.json").write_text(json.dumps(result, indent=1))
    kinds = ("drift", "saturation", "agreement")
    lines = [
        "## Deployment monitor (issue 32, in progress)",
        "",
        f"MobileNetV2, default INT8 ({q.method}) on the 100 `calib` photos, FP32 reference; "
        f"`Monitor` defaults (window 50, alerts from 20 images, 25 % sampled to FP32); "
        f"{cpu_info().get('name', '?')}, 2 cores, {detect()[0].name}. "
        "Command: `python bench/monitor.py`.",
        "",
        f"False alerts on the {clean_mon.seen} clean eval photos, streamed in folder order "
        "(sorted by class): "
        + (", ".join(f"{k} at image {v}" for k, v in clean.items()) or "none")
        + f" ({clean_s:.0f} s, {clean_mon.seen / clean_s:.0f} images/s with the FP32 share).",
        "",
        f"Detection delay: image count at the first alert, first {SHIFTED} eval photos "
        "shifted (— none within them).",
        "",
        "| shift | " + " | ".join(kinds) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    for label, first in delays.items():
        lines.append(f"| {label} | " + " | ".join(str(first.get(k, "—")) for k in kinds) + " |")
    lines += [
        "",
        f"Peak RSS streaming synthetic images: {rss[1000]:.0f} MiB after 1,000, "
        f"{rss[10000]:.0f} MiB after 10,000 ({100 * (rss[10000] / rss[1000] - 1):+.1f} %).",
    ]
    write_section("monitor", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
