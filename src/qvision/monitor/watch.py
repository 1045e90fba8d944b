"""The monitor's core: ``Monitor.observe(batch)`` from a serving loop.

Every image runs through the INT8 model with the inputs of its activation quantizers
exposed, so each grid's saturation (values beyond its range) is counted as the model
runs. A deterministic share (``sample``) also runs through the FP32 reference and is
scored by the task (monitor.agreement). Inputs are summarised per image (mean and spread
of each channel) and compared with the calibration images' by the two-sample
Kolmogorov–Smirnov test (scipy), Bonferroni over the features. All state is fixed-size
windows and a thinned history, so memory does not grow with the stream.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qvision.errors import MissingExtraError, QVisionError
from qvision.eval.tasks.adapters import guess_task
from qvision.model.load import read_model
from qvision.monitor.agreement import make_scorer, mean_interval
from qvision.monitor.baseline import Grids, from_manifest, image_features
from qvision.provenance import MonitorBaseline
from qvision.runtime.session import make_session

MIN_SAMPLED = 5  # sampled images before agreement is judged (a spread needs a few)
# A grid's rise in clipping must also be beyond chance: tiny tensors (an SE block's few
# dozen values) swing by several points from image to image, and the max is over ~100 grids
SATURATION_P = 1e-3  # one-sided Mann-Whitney, window vs calibration images, Bonferroni


@dataclass(frozen=True)
class Thresholds:
    """When to alert; each judged over the last ``window`` images, once ``min_images``."""

    window: int = 50
    min_images: int = 20
    agreement: float = 0.90  # alert when the interval's upper end falls below it
    saturation: float = 0.02  # share of a grid's values clipped, above the calibration's
    drift_p: float = 1e-3  # KS p-value, after Bonferroni over the features

    def __post_init__(self):
        checks = [
            (self.window >= 2, "window must be at least 2 images"),
            (1 <= self.min_images <= self.window, "min-images must be in [1, window]"),
            (0 < self.agreement <= 1, "agreement must be in (0, 1]"),
            (0 < self.saturation < 1, "saturation must be in (0, 1)"),
            (0 < self.drift_p < 1, "drift-p must be in (0, 1)"),
        ]
        for ok, problem in checks:
            if not ok:
                raise QVisionError(f"monitor threshold: {problem}")


@dataclass
class Alert:
    kind: str  # "agreement", "saturation" or "drift"
    message: str
    at_image: int  # images seen when it fired (1-based)


@dataclass
class _Window:
    size: int
    items: deque = field(default_factory=deque)

    def add(self, value) -> None:
        self.items.append(value)
        if len(self.items) > self.size:
            self.items.popleft()


class History:
    """Window states over the stream for the page: at most ``keep`` points, thinned by
    dropping every other one and doubling the stride when full."""

    def __init__(self, keep: int = 400):
        self.keep, self.stride, self.points = keep, 1, []

    def add(self, images: int, point: dict) -> None:
        if images % self.stride:
            return
        self.points.append(point)
        if len(self.points) > self.keep:
            self.points = self.points[1::2]
            self.stride *= 2


class Monitor:
    """Shadow an INT8 model against its FP32 reference on a stream of input batches.

    ``reference``: the calibration baseline; None reads the one ``quantize`` stored in the
    model's manifest, an array (preprocessed calibration inputs) measures it here."""

    def __init__(
        self,
        int8: str | Path,
        fp32: str | Path,
        reference: np.ndarray | MonitorBaseline | None = None,
        *,
        task: str | None = None,
        decoder: dict | None = None,
        sample: float = 0.25,
        thresholds: Thresholds | None = None,
        threads: int | None = None,
    ):
        if not 0 < sample <= 1:
            raise QVisionError(f"--sample must be in (0, 1], got {sample}")
        self.t = thresholds or Thresholds()
        model = read_model(int8)
        self.grids = Grids(model, int8, threads)
        self.tensors = self.grids.tensors
        if reference is None:
            reference = from_manifest(int8)
        if isinstance(reference, MonitorBaseline):
            self.ref_features = np.asarray(reference.features)
            n = reference.saturation_images
            self.ref_clipped = np.array(
                [reference.saturation.get(t, [0.0] * n) for t in self.tensors]
            ).T
            task = task or reference.task
        else:
            self.ref_features = image_features(reference)
            self.ref_clipped = self.grids.shares(reference)
        self.baseline = self.ref_clipped.mean(axis=0)
        self.task = guess_task(model, task)
        meta = {p.key: p.value for p in model.metadata_props}
        self.scorer = make_scorer(self.task, meta, decoder, str(int8))
        self.fp32 = make_session(str(fp32), threads)
        self.input = self.grids.input
        self.outputs: list[np.ndarray] = []  # the last batch's INT8 outputs, to serve
        self.every = max(1, round(1 / sample))
        self.seen = 0
        self.sampled = 0
        self.agree = _Window(self.t.window)
        self.clipped = _Window(self.t.window)
        self.features = _Window(self.t.window)
        self.latency = _Window(self.t.window)  # ms per image, INT8 with the grids exposed
        self.history = History()
        self.alerts: list[Alert] = []
        self.drift_p: float | None = None  # the last test's smallest adjusted p-value
        self._active: set[str] = set()

    def observe(self, batch: np.ndarray) -> list[Alert]:
        """Run one input batch (preprocessed, the model's layout); the alerts it raised.
        The INT8 outputs are in ``self.outputs``: a server answers with them, so the
        monitored run is the served one."""
        t0 = time.perf_counter()
        outs, clipped = self.grids.run(batch)
        ms = 1000 * (time.perf_counter() - t0) / batch.shape[0]
        self.outputs = outs
        feats = image_features(batch)
        new: list[Alert] = []
        for i in range(batch.shape[0]):
            self.seen += 1
            self.clipped.add(clipped[i])
            self.features.add(feats[i])
            self.latency.add(ms)
            if self.seen % self.every == 0:
                self.sampled += 1
                ref = self.fp32.run(None, {self.input: batch[i : i + 1]})
                self.agree.add(self.scorer.score([o[i : i + 1] for o in outs], ref))
            if len(self.features.items) >= self.t.min_images:
                new += self._check()
            self.history.add(self.seen, self._point())
        self.alerts += new
        return new

    def _point(self) -> dict:
        s = self.state()
        return {
            "images": self.seen,
            "agreement": s["agreement"],
            "saturation": float((s["saturation"] - self.baseline).max()),
            "drift_p": self.drift_p,
            "latency_ms": s["latency_ms"],
        }

    def _fire(self, kind: str, message: str) -> list[Alert]:
        if kind in self._active:  # one alert per episode, not one per image
            return []
        self._active.add(kind)
        return [Alert(kind, message, self.seen)]

    def _check(self) -> list[Alert]:
        try:
            from scipy.stats import ks_2samp
        except ImportError:
            raise MissingExtraError("scipy", "monitor", "the drift test") from None

        out: list[Alert] = []
        state = self.state()
        ci = state["agreement_ci95"]
        if state["agreement_n"] >= MIN_SAMPLED and ci[1] < self.t.agreement:
            out += self._fire(
                "agreement",
                f"INT8's {self.scorer.label} with FP32 is {100 * state['agreement']:.0f} % over "
                f"the last {state['agreement_n']} sampled images (below "
                f"{100 * self.t.agreement:.0f} %)",
            )
        else:
            self._active.discard("agreement")
        worst = self._saturated(state["saturation"] - self.baseline)
        if worst is not None:
            out += self._fire(
                "saturation",
                f"{100 * state['saturation'][worst]:.1f} % of the values reaching "
                f"{self.tensors[worst]} fall outside its INT8 range "
                f"(calibration: {100 * self.baseline[worst]:.1f} %)",
            )
        else:
            self._active.discard("saturation")
        window = np.array(self.features.items)
        pvals = [
            ks_2samp(window[:, j], self.ref_features[:, j]).pvalue for j in range(window.shape[1])
        ]
        j = int(np.argmin(pvals))
        self.drift_p = min(1.0, float(pvals[j]) * len(pvals))  # Bonferroni-adjusted
        if self.drift_p < self.t.drift_p:
            out += self._fire(
                "drift",
                f"input statistics drifted from the calibration images (feature {j}: "
                f"window mean {window[:, j].mean():.3f} vs {self.ref_features[:, j].mean():.3f}, "
                f"KS p = {pvals[j]:.1e})",
            )
        else:
            self._active.discard("drift")
        return out

    def _saturated(self, excess: np.ndarray) -> int | None:
        """The grid clipping most beyond calibration, by more than the threshold and by a
        rank test on per-image shares; None when no grid is."""
        from scipy.stats import mannwhitneyu

        window = np.array(self.clipped.items)
        worst, most = None, self.t.saturation
        for j in np.flatnonzero(excess > self.t.saturation):
            p = mannwhitneyu(window[:, j], self.ref_clipped[:, j], alternative="greater").pvalue
            if p * len(excess) < SATURATION_P and excess[j] > most:
                worst, most = int(j), excess[j]
        return worst

    def state(self) -> dict:
        """The current window: agreement (with its 95 % interval), mean saturation per grid,
        INT8 latency per image (median), images seen."""
        agree = list(self.agree.items)
        sat = np.array(self.clipped.items).mean(axis=0) if self.clipped.items else self.baseline
        return {
            "images": self.seen,
            "task": self.task,
            "agreement_label": self.scorer.label,
            "agreement": float(np.mean(agree)) if agree else None,
            "agreement_n": len(agree),
            "agreement_ci95": mean_interval(agree, self.scorer.binary) if agree else None,
            "saturation": sat,
            "latency_ms": float(np.median(self.latency.items)) if self.latency.items else None,
        }
