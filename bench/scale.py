"""Issue 35, scale-out: robustness of MobileNetV2 FP32 vs INT8 on 300 eval photos under 9
corruptions x 3 severities (+ clean) in this process, and as Ray tasks with 1 worker
process of 2 CPUs vs 2 worker processes of 1 CPU on this machine; then Ray's overhead
on a small run (20 photos, clean only: one task): a new local cluster each time, and a
cluster already running, against the same run in this process.

Run: `make bench-scale` (or `.venv/bin/python bench/scale.py [--limit 300] [--repeats 1]`).
The big runs go in the order local, ray x1, ray x2 (reversed on odd repeats), the small
ones interleaved; every run's rows are checked equal to the local run's. Writes
bench/out/scale.json and the `scale` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from qvision import api
from qvision.cluster.ray_executor import RayExecutor
from qvision.runtime.machine import cpu_info

from common import OUT, require_imagenet, write_section


def timed(fn):
    t = time.perf_counter()
    res = fn()
    return time.perf_counter() - t, res


def rows(res) -> list[dict]:
    return [r.model_dump() for r in res.rows]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--small", type=int, default=5, help="repeats of the small run")
    ap.add_argument(
        "--small-only", action="store_true", help="keep the big runs of bench/out/scale.json"
    )
    args = ap.parse_args()
    data = require_imagenet()
    OUT.mkdir(parents=True, exist_ok=True)
    fp32, int8 = OUT / "mobilenetv2.onnx", OUT / "mobilenetv2-scale-int8.onnx"
    if not fp32.exists():
        api.export_zoo_model("mobilenetv2", fp32)
    if not int8.exists():
        api.quantize(fp32, int8, data / "calib")
    evald = data / "eval"

    def big(executor):
        return api.robustness(fp32, int8, evald, limit=args.limit, executor=executor)

    # one Ray cluster of 2 CPUs: 1 task at a time with 1 or 2 threads, or 2 of 1 thread
    one = RayExecutor(cpus_per_task=2, num_cpus=2)
    lone = RayExecutor(cpus_per_task=2, threads=1)
    two = RayExecutor(cpus_per_task=1)
    times: dict[str, list[float]] = {
        "local": [],
        "ray x1": [],
        "ray x1, 1 thread": [],
        "ray x2": [],
    }
    reference, settings = None, None
    if args.small_only:
        saved = json.loads((OUT / "scale.json").read_text())
        times, settings = saved["times"], saved["settings"]
        args.limit, args.repeats = saved["limit"], len(times["local"])
    for rep in range(0 if args.small_only else args.repeats):
        order = [("local", "local"), ("ray x1", one), ("ray x1, 1 thread", lone), ("ray x2", two)]
        for name, ex in order if rep % 2 == 0 else order[::-1]:
            seconds, res = timed(lambda ex=ex: big(ex))
            times[name].append(seconds)
            reference = reference or rows(res)
            assert rows(res) == reference, f"{name}: rows differ from the first run"
            print(f"{name}: {seconds:.1f} s ({len(res.rows)} settings x {res.images} photos)")
    settings = settings or len(reference)

    def small(executor, k: int):
        # 20 + k photos: a job no worker has open yet (workers keep the last one's sessions)
        return api.robustness(fp32, int8, evald, limit=20 + k, corruptions=[], executor=executor)

    small_t: dict[str, list[float]] = {"local": [], "ray, running cluster": []}
    for k in range(args.small):
        small_t["local"].append(timed(lambda k=k: small("local", k))[0])
        small_t["ray, running cluster"].append(timed(lambda k=k: small(two, k))[0])
    two.close()
    lone.close()
    one.close()
    import ray

    ray.shutdown()
    fresh = []
    for k in range(args.small):  # a new local cluster started and stopped by the run
        fresh.append(timed(lambda k=k: small("ray", k))[0])
    small_t["ray, new local cluster"] = fresh

    med = {k: statistics.median(v) for k, v in times.items()}
    smed = {k: statistics.median(v) for k, v in small_t.items()}
    out = {
        "limit": args.limit,
        "settings": settings,
        "times": times,
        "small": small_t,
        "cpu": cpu_info(),
    }
    (OUT / "scale.json").write_text(json.dumps(out, indent=1, default=str))
    cpu = cpu_info()
    md = [
        "## Scale-out on Ray: robustness, 1 vs 2 worker processes",
        "",
        f"Command: `.venv/bin/python bench/scale.py --limit {args.limit} --repeats "
        f"{args.repeats}` (`make bench-scale`). MobileNetV2 FP32 vs qvision INT8 (default "
        f"settings), {args.limit} eval photos x {settings} settings (clean + 9 corruptions x 3 "
        f"severities), both models per setting. Machine: {cpu['name']}, "
        f"{cpu['logical_cores']} logical CPUs, {', '.join(cpu['int8_flags'])}. One setting = one piece of work; Ray on a "
        "local 2-CPU cluster (`ray.init`); every run's rows equal the local run's exactly. "
        f"Median of {args.repeats} run(s) each, in alternating order.",
        "",
        "| where | wall time | speed vs local | vs ray x1 | vs ray x1, 1 thread |",
        "|---|---|---|---|---|",
    ]
    for k in times:
        md.append(
            f"| {k} | {med[k]:.0f} s | {med['local'] / med[k]:.2f}x | "
            f"{med['ray x1'] / med[k]:.2f}x | {med['ray x1, 1 thread'] / med[k]:.2f}x |"
        )
    md += [
        "",
        "local: this process, ONNX Runtime 2 threads. ray x1: one worker process at a time, "
        "2 threads; ray x1, 1 thread: the same with 1 ONNX Runtime thread (one worker's "
        "share of x2); ray x2: two worker processes of 1 thread, two settings at once. Both "
        "cores are busy already in local and x1 (2 inference threads, 2 decoding threads), "
        "so a second process on the same 2 cores gains by overlapping decoding and "
        "corrupting (Python, Pillow) with inference, not by new cores; across nodes each "
        "worker brings its own.",
        "",
        f"Overhead on a small run (20 to {19 + args.small} photos, clean only: one task; "
        f"median of {args.small}, interleaved with the local run; each run a new job, so a "
        "worker opens its sessions as the local run does):",
        "",
        "| where | wall time | minus local |",
        "|---|---|---|",
    ]
    for k in small_t:
        md.append(f"| {k} | {smed[k]:.2f} s | {smed[k] - smed['local']:+.2f} s |")
    write_section("scale", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
