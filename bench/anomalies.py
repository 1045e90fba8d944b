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

And the PP-OCRv4 recognizer reading rendered lines better in INT8 than in FP32 (`--rec`):
each line fed alone (its own width, batch 1) as one array to both models; the paired
outcomes per line; the edits each model makes, split into spaces added at a line's ends and
everything else; both CERs with the ends stripped; at the time steps where FP32 alone emits
such a space, how close FP32's space and blank probabilities are, and what INT8 chose.

Run: `.venv/bin/python bench/anomalies.py [--images 200]` (or `--rec`); prints JSON and
writes bench/out/anomalies.json (anomalies-rec.json).
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
from qvision.data import iter_batches, labelled_folder, load_image
from qvision.data.datasets import text_lines
from qvision.eval.evaluate import metadata
from qvision.eval.robustness import corrupt
from qvision.eval.tasks.ocr import alphabet, ctc_greedy, edit_distance
from qvision.intervals import paired_difference, z_for
from qvision.runtime.session import make_session

from common import OUT, require_imagenet


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--corruption", default="defocus-blur")
    ap.add_argument("--severity", type=int, default=3)
    ap.add_argument("--skip", type=int, default=0, help="start after this many eval photos")
    ap.add_argument("--rec", action="store_true", help="the OCR recognizer instead")
    args = ap.parse_args()
    if args.rec:
        return recognizer()
    root = require_imagenet()
    fp32 = OUT / "behaviour" / "mobilenetv2.onnx"
    int8 = OUT / "behaviour" / "after" / "mobilenetv2-0.onnx"
    if not fp32.exists():
        api.export_zoo_model("mobilenetv2", fp32)
    if not int8.exists():
        api.quantize(fp32, int8, root / "calib", check_images=0)
    ds = labelled_folder(root / "eval")
    ds.samples = ds.samples[args.skip : args.skip + args.images]
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
    row = None
    if not args.skip:  # the robustness run scores the first photos of the folder
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
        "first": args.skip,
        "setting": f"{args.corruption} {args.severity}",
        "distinct_batches_hashed": len(digests),
        "paired": table,
        "drop_points": 100 * (lost - gained) / n,
        "interval_95": one,
        "interval_joint_27": joint,
        "robustness_path_top1": row and {"fp32": row.fp32, "int8": row.int8},
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
    (OUT / f"anomalies-{args.skip}.json").write_text(json.dumps(result, indent=1))


def _edge_spaces(text: str) -> int:
    return len(text) - len(text.strip(" "))


def recognizer() -> None:
    rec, int8 = OUT / "ppocr-rec.onnx", OUT / "ppocr-rec-qv.onnx"
    lines = OUT / "ocr-lines"
    if not (rec.exists() and int8.exists() and lines.is_dir()):
        raise SystemExit("run bench/ocr.py first (it writes the recognizer, its INT8, the lines)")
    ds = text_lines(lines)
    proto, inp = api.open_model(rec)
    pre = api.resolve_preprocess(proto, None, inp, rec)
    table = alphabet(
        metadata(proto), int(proto.graph.output[0].type.tensor_type.shape.dim[-1].dim_value)
    )
    space = table.index(" ")
    f_sess, q_sess = make_session(rec), make_session(int8)
    got = {"fp32": [], "int8": []}
    truth, near_ties, int8_there = [], [], collections.Counter()
    for batch in iter_batches(ds, pre, 1):
        x = batch.inputs
        pf = f_sess.run(None, {inp.name: x})[0][0]
        pq = q_sess.run(None, {inp.name: x})[0][0]  # the very same array
        sf, sq = ctc_greedy(pf[None], table)[0], ctc_greedy(pq[None], table)[0]
        got["fp32"].append(sf)
        got["int8"].append(sq)
        truth.append(batch.samples[0].text)
        # time steps where FP32 says space and INT8 does not, outside the text (before the
        # first or after the last non-blank, non-space step of FP32)
        best_f, best_q = pf.argmax(-1), pq.argmax(-1)
        ink = np.flatnonzero((best_f != 0) & (best_f != space))
        if len(ink):
            for t in np.flatnonzero((best_f == space) & (best_q != space)):
                if t < ink[0] or t > ink[-1]:
                    near_ties.append(float(pf[t, space] - pf[t, 0]))
                    int8_there[table[best_q[t]] or "blank"] += 1
    ok = {k: np.array([p == t for p, t in zip(v, truth, strict=True)]) for k, v in got.items()}
    n = len(truth)
    chars = sum(len(t) for t in truth)

    def cer(v, strip=False):
        return (
            100
            * sum(
                edit_distance(p.strip(" ") if strip else p, t)
                for p, t in zip(v, truth, strict=True)
            )
            / chars
        )

    fp32_only_fixed_by_strip = sum(
        1
        for p, q, t in zip(got["fp32"], got["int8"], truth, strict=True)
        if p != t and q == t and p.strip(" ") == t
    )
    result = {
        "lines": n,
        "cer": {k: cer(v) for k, v in got.items()},
        "cer_ends_stripped": {k: cer(v, True) for k, v in got.items()},
        "exact": {k: float(v.mean()) for k, v in ok.items()},
        "paired_exact": {
            "both": int((ok["fp32"] & ok["int8"]).sum()),
            "fp32_only": int((ok["fp32"] & ~ok["int8"]).sum()),
            "int8_only": int((~ok["fp32"] & ok["int8"]).sum()),
            "neither": int((~ok["fp32"] & ~ok["int8"]).sum()),
        },
        "int8_only_lines_fp32_right_once_ends_stripped": fp32_only_fixed_by_strip,
        "lines_with_edge_spaces": {k: sum(_edge_spaces(p) > 0 for p in v) for k, v in got.items()},
        "edge_space_steps_fp32_not_int8": len(near_ties),
        "fp32_p_space_minus_p_blank_there": {
            "median": float(np.median(near_ties)) if near_ties else None,
            "share_below_0.2": float(np.mean(np.array(near_ties) < 0.2)) if near_ties else None,
        },
        "int8_choice_there": dict(int8_there.most_common(3)),
        "evaluate_path_batch1_cer": {
            "fp32": 100 * api.evaluate(rec, lines, task="ocr-rec", batch_size=1).metrics["cer"],
            "int8": 100 * api.evaluate(int8, lines, task="ocr-rec", batch_size=1).metrics["cer"],
        },
        "examples_int8_only": [
            {"truth": t, "fp32": p, "int8": q}
            for p, q, t in zip(got["fp32"], got["int8"], truth, strict=True)
            if p != t and q == t
        ][:6],
    }
    print(json.dumps(result, indent=1), file=sys.stderr)
    (OUT / "anomalies-rec.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
