"""Block-reconstruction (or AdaRound) settings side by side, several seeds each, made for a lent GPU.

`plans` computes one weight-mse + bias-correction plan per model, then runs `brecq` with
each setting and seed from it (WORKERS processes at once; on a GPU when torch sees one) and
saves each plan; with `--algo adaround` the plan is `cle`'s and each run is `adaround` then
`bias-correction` (the issue's `cle,bias-correction,adaround`), at `--weights` bits; `eval` writes and evaluates the saved plans here and prints one row per
setting. Plans are made for `--target` (default: this machine's profile), so pass the
profile of the machine that will evaluate them: a lent GPU server's CPU has VNNI, and its
`auto` plans saturate on AVX2 without it.

    python bench/brecq_sweep.py plans --calib DIR --out DIR [--target ort-cpu-avx2]
        [--models a.onnx,b.onnx] [--settings '{"base": {}, "it600": {"iters": 600}}']
        [--seeds 3] [--workers 8] [--minutes 9] [--algo adaround --weights int8]
    python bench/brecq_sweep.py eval --out DIR --eval DIR [--models ...] [--algo ... --weights ...]

On a lent GPU machine (its image has torch, onnx and onnxruntime but not pydantic): carry
the float models, the calibration folder and pydantic's wheels in an ignored folder, name
`--target ort-cpu-avx2`, and tar the plans into $OUT in parts under 16 MB (an
EfficientNet-Lite0 plan is ~1.2 MB); 30 EfficientNet-Lite0 runs took 7 minutes there.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

SETTINGS = {
    "base": {},
    "iters600": {"iters": 600},
    "reg0.03": {"reg": 0.03},
    "drop0.5": {"drop": 0.5},
    "mix0.75": {"mix": 0.75},
    "nobias": {"bias": False},
    "noscale": {"scale": False},
}
# the plan every run starts from and the steps each run adds, per algorithm; together they are
# the pipeline a saved plan is written with
BASE = {"brecq": "weight-mse,bias-correction", "adaround": "cle"}
STEPS = {"brecq": ["brecq"], "adaround": ["adaround", "bias-correction"]}
PIPELINE = {a: ",".join([BASE[a], *STEPS[a]]) for a in BASE}


def _config(target: str, algo: str, weights: str):
    from qvision.quant.config import QuantConfig

    return QuantConfig(weights=weights, algos=BASE[algo], target=target)


def _preprocess(model: Path):
    from qvision import api

    proto, inp = api.open_model(model)
    return api.resolve_preprocess(proto, None, inp, model)


def _base(args) -> None:
    model, calib, out, target, algo, weights = args
    from qvision.quant import pipeline

    config = _config(target, algo, weights)
    planned = pipeline.make_plan(model, calib, _preprocess(model), config, threads=8)
    planned.plan.save(out / f"base-{model.stem}.json")


def _job(args) -> dict:
    model, calib, out, target, algo, weights, name, opts, seed = args
    import torch

    from qvision.data.datasets import image_folder
    from qvision.quant import pipeline
    from qvision.quant.algorithms.context import Context

    torch.set_num_threads(2)
    t0 = time.time()
    pre = _preprocess(model)
    base = out / f"base-{model.stem}.json"
    planned = pipeline.make_plan(model, None, pre, _config(target, algo, weights), plan_in=base)
    ctx = Context(
        planned.prepared,
        planned.plan,
        planned.target,
        image_folder(calib),
        pre,
        planned.input_name,
        2,
        options={algo: {**opts, "seed": seed}},
    )
    pipeline.run_algorithms(ctx, STEPS[algo])
    planned.plan.algorithms.extend(STEPS[algo])
    planned.plan.warnings.extend(ctx.log)
    planned.plan.save(out / f"{model.stem}--{name}--{seed}.json")
    return {"model": model.stem, "setting": name, "seed": seed, "s": round(time.time() - t0)}


def plans(a) -> None:
    out, calib, models = Path(a.out), Path(a.calib), [Path(m) for m in a.models.split(",")]
    out.mkdir(parents=True, exist_ok=True)
    from qvision.targets import detect

    target = a.target or detect()[0].name
    settings = json.loads(a.settings) if a.settings else SETTINGS
    deadline = time.time() + 60 * a.minutes
    spawn = mp.get_context("spawn")  # a fresh process per pool: CUDA does not survive fork
    with spawn.Pool(len(models)) as pool:
        pool.map(_base, [(m, calib, out, target, a.algo, a.weights) for m in models])
    jobs = [
        (m, calib, out, target, a.algo, a.weights, name, opts, seed)
        for seed in range(a.first_seed, a.first_seed + a.seeds)
        for name, opts in settings.items()
        for m in models
    ]
    with spawn.Pool(a.workers) as pool:
        for row in pool.imap_unordered(_job, jobs):
            print(json.dumps(row), flush=True)
            if time.time() > deadline:
                print("time is up: unfinished runs dropped", flush=True)
                pool.terminate()
                break


def evaluate(a) -> None:
    from qvision import api

    out = Path(a.out)
    models = {Path(m).stem: Path(m) for m in a.models.split(",")}
    results = out / "results.jsonl"
    done = (
        {json.loads(x)["plan"] for x in results.read_text().splitlines()}
        if results.exists()
        else set()
    )
    for plan in sorted(out.glob("*--*--*.json")):
        if plan.stem in done:
            continue
        fp32 = models[plan.stem.split("--")[0]]
        onnx_out = out / "sweep.onnx"
        api.quantize(fp32, onnx_out, plan=plan, weights=a.weights, algos=PIPELINE[a.algo])
        e = api.evaluate(onnx_out, a.eval, reference=fp32)
        row = {"plan": plan.stem, "top1": e.metrics["top1"], "agreement": e.agreement}
        with results.open("a") as f:
            f.write(json.dumps({**row, "sqnr_db": e.fidelity.sqnr_db}) + "\n")
        print(json.dumps(row), flush=True)
    table: dict[tuple[str, str], list[dict]] = {}
    for line in results.read_text().splitlines():
        r = json.loads(line)
        model, setting, _seed = r["plan"].split("--")
        table.setdefault((setting, model), []).append(r)
    for (setting, model), rows in sorted(table.items()):
        top1 = [100 * r["top1"] for r in rows]
        print(
            f"{setting:12s} {model:20s} top-1 {' / '.join(f'{v:.2f}' for v in top1)}"
            f" mean {sum(top1) / len(top1):.2f}"
            f"  agreement {100 * sum(r['agreement'] for r in rows) / len(rows):.1f}"
            f"  SQNR {sum(r['sqnr_db'] for r in rows) / len(rows):.2f} dB"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["plans", "eval"])
    ap.add_argument(
        "--models", default="bench/out/mobilenetv2.onnx,bench/out/efficientnet-lite0.onnx"
    )
    ap.add_argument("--out", required=True)
    ap.add_argument("--calib")
    ap.add_argument("--eval")
    ap.add_argument("--target", default=None)
    ap.add_argument("--settings", default=None, help="JSON: name -> options of --algo")
    ap.add_argument("--algo", choices=list(BASE), default="brecq")
    ap.add_argument("--weights", default="int4", help="int4 or int8")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--minutes", type=float, default=9.0, help="stop collecting after this")
    a = ap.parse_args()
    if a.mode == "plans" and not a.calib:
        sys.exit("plans needs --calib DIR")
    if a.mode == "eval" and not a.eval:
        sys.exit("eval needs --eval DIR")
    (plans if a.mode == "plans" else evaluate)(a)


if __name__ == "__main__":
    main()
