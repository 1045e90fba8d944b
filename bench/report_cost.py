"""Issue 31: what the evidence report costs. `quantize --eval` and `quantize --eval --report`
(default parts, and `--report-parts all`) on the same 200 labelled ImageNet photos, timed as
whole processes, interleaved (A, B, C, A, B, C, ...), so the ratios come from one run on one
machine; absolute seconds drift ±25 % on shared 2-core machines, the ratios much less.

Run: `make bench-report` (or `.venv/bin/python bench/report_cost.py [--rounds 3]
[--images 200] [--models mobilenetv2,efficientnet-lite0] [--all-rounds 1]`). Writes the
`report` section of BENCHMARKS.md and bench/out/report/times.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from qvision import api
from qvision.runtime.machine import cpu_info
from qvision.targets import detect

from common import OUT, require_imagenet, write_section


def eval_subset(src: Path, dst: Path, n: int) -> Path:
    """The first n eval photos (sorted paths), class folders and classes.txt kept."""
    if dst.exists():
        shutil.rmtree(dst)
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.parent != src)[:n]
    for f in files:
        (dst / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dst / f.parent.name / f.name)
    shutil.copyfile(src / "classes.txt", dst / "classes.txt")
    return dst


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return time.perf_counter() - t


def _cells(med: dict, ratio: dict, k: str) -> tuple[str, str]:
    if k not in ratio:
        return "—", "—"
    v = ratio[k]
    return f"{med[k]:.0f} s", f"{statistics.median(v):.2f}× [{v[0]:.2f}–{v[-1]:.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--models", default="mobilenetv2,efficientnet-lite0")
    ap.add_argument(
        "--all-rounds", type=int, default=1, help="rounds that also run --report-parts all"
    )
    args = ap.parse_args()
    data = require_imagenet()
    work = OUT / "report"
    work.mkdir(parents=True, exist_ok=True)
    evald = eval_subset(data / "eval", work / f"eval{args.images}", args.images)
    qv = str(Path(sys.executable).with_name("qvision"))
    rows, raw = [], {}
    for name in args.models.split(","):
        model = OUT / f"{name}.onnx"
        if not model.exists():
            api.export_zoo_model(name, model)
        base = [qv, "quantize", str(model), "--calib", str(data / "calib"), "--eval", str(evald)]
        variants = {
            "eval": [*base, "-o", str(work / f"{name}.a.onnx")],
            "report": [*base, "-o", str(work / f"{name}.b.onnx"), "--report", str(work / "r1")],
        }
        if args.all_rounds > 0:
            variants["report all"] = [
                *base,
                "-o",
                str(work / f"{name}.c.onnx"),
                "--report",
                str(work / "r2"),
                "--report-parts",
                "all",
            ]
        times: dict[str, list[float]] = {k: [] for k in variants}
        for i in range(args.rounds):
            for k, cmd in variants.items():
                if k == "report all" and i >= args.all_rounds:
                    continue
                times[k].append(timed(cmd))
                print(name, k, f"{times[k][-1]:.1f} s", flush=True)
        raw[name] = times
        med = {k: statistics.median(v) for k, v in times.items()}
        # paired per round: each round's ratio, then their median and spread
        ratio = {
            k: sorted(b / a for a, b in zip(times["eval"], times[k], strict=False))
            for k in variants
            if k != "eval"
        }
        rows.append((name, med, ratio))
    (work / "times.json").write_text(json.dumps(raw, indent=1))
    cpu = cpu_info().get("name", "?")
    target = detect()[0].name
    lines = [
        "## Report cost (issue 31)",
        "",
        f"`quantize --eval` with and without `--report` on the first {args.images} ImageNet "
        f"eval photos (calibration: the 100 `calib`), whole processes, {args.rounds} rounds "
        f"interleaved ({args.all_rounds} with `all`); {cpu}, 2 cores, {target}. Ratio: per "
        "round, median [min–max].",
        "",
        "| model | quantize --eval | + --report (default parts) | ratio | + --report-parts all | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for name, med, ratio in rows:
        d, a = _cells(med, ratio, "report"), _cells(med, ratio, "report all")
        lines.append(f"| {name} | {med['eval']:.0f} s | {d[0]} | {d[1]} | {a[0]} | {a[1]} |")
    lines += [
        "",
        "Default parts: latency, sensitivity (of the plan the run wrote: 16 weight layers, 8 images), activation "
        "ranges, plus the quantize run's shift check, data checks and provenance; `all` adds "
        "27 corruption settings on the 200 photos and FGSM/PGD on 16. "
        f"Command: `python bench/report_cost.py --rounds {args.rounds} --images {args.images} "
        f"--all-rounds {args.all_rounds}`.",
    ]
    write_section("report", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
