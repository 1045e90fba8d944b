"""Latency benchmark: several models measured interleaved, so drift hits all alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qvision.model.load import model_size  # noqa: F401  (imported from here before)
from qvision.runtime.inputs import random_feeds
from qvision.runtime.session import make_session


@dataclass
class Timings:
    samples_ms: list[float]

    def stats(self) -> dict[str, float]:
        a = np.asarray(self.samples_ms)
        return {
            "median_ms": float(np.median(a)),
            "p90_ms": float(np.percentile(a, 90)),
            "mean_ms": float(a.mean()),
            "min_ms": float(a.min()),
            "runs": int(a.size),
        }


def time_interleaved(
    paths: list[str],
    batch: int,
    hw_of: Callable[[str], tuple[int, int] | None],
    threads: int | None,
    rounds: int = 10,
    seconds: float = 3.0,
    warmup: int = 5,
    on_round: Callable[[int, int], None] | None = None,
) -> list[Timings]:
    """Median-ready per-run latencies; each round runs every model in turn (A, B, A, B…)."""
    sessions = [make_session(p, threads) for p in paths]
    feeds = [random_feeds(s, batch, hw_of(p), p) for s, p in zip(sessions, paths, strict=True)]
    calls = [
        lambda s=sess, f=feed: s.run(None, f) for sess, feed in zip(sessions, feeds, strict=True)
    ]
    return time_calls(calls, rounds, seconds, warmup, on_round)


def time_calls(
    calls: list[Callable[[], object]],
    rounds: int = 10,
    seconds: float = 3.0,
    warmup: int = 5,
    on_round: Callable[[int, int], None] | None = None,
) -> list[Timings]:
    """Per-run latencies of each call, interleaved in rounds (A, B, A, B…), whatever runs the
    model (an ONNX Runtime session, another runtime's compiled model)."""
    iters = []
    for call in calls:
        t0 = time.perf_counter()
        for _ in range(warmup):
            call()
        per_run = (time.perf_counter() - t0) / warmup
        # Enough runs per round that each model gets about `seconds` in total.
        iters.append(max(1, int(seconds / rounds / max(per_run, 1e-6))))
    out = [Timings([]) for _ in calls]
    for r in range(rounds):
        for i, call in enumerate(calls):
            for _ in range(iters[i]):
                t0 = time.perf_counter_ns()
                call()
                out[i].samples_ms.append((time.perf_counter_ns() - t0) / 1e6)
        if on_round:
            on_round(r + 1, rounds)
    return out


def peak_rss(path: str, batch: int, hw: tuple[int, int] | None, threads: int | None) -> int | None:
    """Peak resident memory of a fresh process that loads the model and runs it a few times."""
    args = json.dumps({"path": str(path), "batch": batch, "hw": hw, "threads": threads})
    env = dict(os.environ)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "qvision.runtime.rss", args],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    try:
        return int(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
