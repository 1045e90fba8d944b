"""How much better a quantized model fits its calibration photos than other photos.

Learned rounding fits the calibration images; the SQNR of the quantized model against the
float one on those images, next to the same on held-out images, shows how much of the fit
carries over. Per block output (residual Add outputs and the last tensor before pooling)
the two SQNRs show where the gap opens.

Run: `.venv/bin/python bench/calib_gap.py QUANTIZED.onnx FLOAT.onnx [--eval-limit 200]`
(calibration photos: the sample's `calib`, held out: its `eval`). Prints a table and writes
bench/out/calib-gap-<name>.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx

from qvision import api
from qvision.data import iter_batches
from qvision.model.rewrite import expose_tensors
from qvision.qmath import OutputError, sqnr_db
from qvision.quant.algorithms.brecq import POOLING
from qvision.runtime.session import make_session

from common import OUT, require_imagenet


def block_outputs(model: onnx.ModelProto, quantized: set[str]) -> list[str]:
    """Residual Add outputs and the input of the first global pooling, in graph order."""
    picks = []
    for n in model.graph.node:
        if n.op_type == "Add" and n.output[0] in quantized:
            picks.append(n.output[0])
        if n.op_type in POOLING and n.input[0] in quantized:
            picks.append(n.input[0])
            break
    return picks


def sqnr_by_tensor(fp32: Path, sf, sq, names: list[str], data: Path, limit: int | None):
    _, inp, pre, _, dataset = api.open_task(fp32, data, "classification", None, limit)
    errs = [OutputError() for _ in names]
    for batch in iter_batches(dataset, pre, 20):
        x = {inp.name: batch.inputs.astype(np.float32)}
        for e, a, b in zip(errs, sf.run(names, x), sq.run(names, x), strict=True):
            e.update(a, b)
    return [sqnr_db(e.signal, e.noise) for e in errs]


def _round(db: float | None) -> float | None:
    """None where the two models agree exactly (no noise)."""
    return None if db is None else round(db, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("quantized", type=Path)
    ap.add_argument("fp32", type=Path)
    ap.add_argument("--eval-limit", type=int, default=200)
    args = ap.parse_args()
    root = require_imagenet()
    q, f = onnx.load(str(args.quantized)), onnx.load(str(args.fp32))
    names = block_outputs(f, {o for n in q.graph.node for o in n.output})
    names += [o.name for o in f.graph.output]
    # unfused QDQ: the intermediate tensors are the ones named in the float graph
    sf, sq = (
        make_session(expose_tensors(m, names).SerializeToString(), optimize=False) for m in (f, q)
    )
    cal = sqnr_by_tensor(args.fp32, sf, sq, names, root / "calib", None)
    held = sqnr_by_tensor(args.fp32, sf, sq, names, root / "eval", args.eval_limit)
    rows = [
        {"tensor": t, "calib_db": _round(c), "eval_db": _round(e)}
        for t, c, e in zip(names, cal, held, strict=True)
    ]
    print(f"{'#':>3} {'tensor':32} {'calib dB':>9} {'eval dB':>8} {'gap':>6}")
    for i, r in enumerate(rows):
        c, e = r["calib_db"], r["eval_db"]
        gap = "" if c is None or e is None else f"{c - e:.2f}"
        shown = ["-" if v is None else f"{v:.2f}" for v in (c, e)]
        print(f"{i:3d} {r['tensor'][:32]:32} {shown[0]:>9} {shown[1]:>8} {gap:>6}")
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"calib-gap-{args.quantized.stem}.json"
    out.write_text(json.dumps({"model": str(args.quantized), "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
