"""Issue 30, item 4: INT8 scoring above FP32 under defocus blur - a real effect or a bug in
a path? Evidence for MobileNetV2 (default INT8) on the first N eval photos at defocus-blur
severity 3:

1. the paths: the corrupted images saved losslessly and scored by `evaluate` (decode,
   preprocess, run) must give the robustness run's top-1 for both models;
2. the same tensors: one preprocessed batch fed to both models (hashes printed);
3. the paired outcomes (both right, FP32 only, INT8 only, both wrong) with the paired
   interval, per-setting and joint over 27 settings;
4. per image: where INT8 is right and FP32 wrong, what FP32 answered (a class that blur
   attracts?) and by what margin.

Run: `.venv/bin/python bench/anomalies.py [--images 200]`; prints JSON lines and writes
bench/out/anomalies.json.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from qvision import api
from qvision.data import image_folder, iter_batches, load_image
from qvision.eval.robustness import corrupt
from qvision.intervals import paired_difference, z_for
from qvision.runtime.session import make_session

from common import OUT, require_imagenet


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--corruption", default="defocus-blur")
    ap.add_argument("--severity", type=int, default=3)
    args = ap.parse_args()
    root = require_imagenet()
    fp32 = OUT / "behaviour" / "mobilenetv2.onnx"
    int8 = OUT / "behaviour" / "after" / "mobilenetv2-0.onnx"
    if not fp32.exists():
        api.export_zoo_model("mobilenetv2", fp32)
    if not int8.exists():
        api.quantize(fp32, int8, root / "calib", check_images=0)
    ds = image_folder(root / "eval")
    ds.samples = ds.samples[: args.images]
    proto, inp = api.open_model(fp32)
    pre = api.resolve_preprocess(proto, None, inp, fp32)
    shift = corrupt(args.corruption, args.severity)
    f_sess, q_sess = make_session(fp32), make_session(int8)
    labels, f_logits, q_logits, digests = [], [], [], set()
    for batch in iter_batches(ds, pre, 32, transform=shift):
        x = batch.inputs
        digests.add(hashlib.sha256(x.tobytes()).hexdigest()[:12])
        f_logits.append(f_sess.run(None, {inp.name: x})[0])
        q_logits.append(q_sess.run(None, {inp.name: x})[0])  # the very same array
        labels += [s.label for s in batch.samples]
    f, q, y = np.concatenate(f_logits), np.concatenate(q_logits), np.array(labels)
    f_ok, q_ok = f.argmax(1) == y, q.argmax(1) == y
    n = len(y)
    table = {
        "both_right": int((f_ok & q_ok).sum()),
        "fp32_only": int((f_ok & ~q_ok).sum()),
        "int8_only": int((~f_ok & q_ok).sum()),
        "both_wrong": int((~f_ok & ~q_ok).sum()),
    }
    lost, gained = table["fp32_only"], table["int8_only"]
    one = [100 * v for v in paired_difference(lost, gained, n)]
    joint = [100 * v for v in paired_difference(lost, gained, n, z_for(0.95, 27))]
    # the robustness path and the evaluate path on the same corrupted images (saved as PNG)
    with tempfile.TemporaryDirectory() as tmp:
        for i, s in enumerate(ds.samples):
            cls = Path(s.path).parent.name
            (Path(tmp) / cls).mkdir(exist_ok=True)
            shift(load_image(s.path), i).save(Path(tmp) / cls / f"{Path(s.path).stem}.png")
        # the class index of a folder comes from the split's classes.txt
        (Path(tmp) / "classes.txt").write_text((root / "eval" / "classes.txt").read_text())
        e_f = api.evaluate(fp32, tmp).metrics["top1"]
        e_q = api.evaluate(int8, tmp).metrics["top1"]
    rob = api.robustness(
        fp32, int8, root / "eval", corruptions=[args.corruption], severities=(args.severity,),
        limit=args.images,
    )  # fmt: skip
    row = next(r for r in rob.rows if r.corruption == args.corruption)
    # where INT8 alone is right: what FP32 said instead, and how sure it was
    names = api.load_model(fp32).metadata_props
    labels_json = next((p.value for p in names if p.key == "qvision.labels"), "[]")
    words = json.loads(labels_json)
    instead = collections.Counter(int(c) for c in f.argmax(1)[~f_ok & q_ok])
    top_fp32 = collections.Counter(int(c) for c in f.argmax(1))
    p = np.exp(f - f.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    margin = p.max(1) - p[np.arange(n), y]
    result = {
        "images": n,
        "setting": f"{args.corruption} {args.severity}",
        "distinct_batches_hashed": len(digests),
        "paired": table,
        "drop_points": 100 * (lost - gained) / n,
        "interval_95": one,
        "interval_joint_27": joint,
        "robustness_path_top1": {"fp32": row.fp32, "int8": row.int8},
        "evaluate_path_top1": {"fp32": e_f, "int8": e_q},
        "here_top1": {"fp32": float(f_ok.mean()), "int8": float(q_ok.mean())},
        "fp32_answers_where_only_int8_right": [
            (words[c] if c < len(words) else c, k) for c, k in instead.most_common(5)
        ],
        "fp32_most_common_answers": [
            (words[c] if c < len(words) else c, k) for c, k in top_fp32.most_common(5)
        ],
        "fp32_margin_where_only_int8_right": float(np.median(margin[~f_ok & q_ok]))
        if gained
        else None,
    }
    print(json.dumps(result, indent=1), file=sys.stderr)
    (OUT / "anomalies.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
