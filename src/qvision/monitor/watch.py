"""The monitor's core: ``Monitor.observe(batch)`` from a serving loop.

Every image runs through the INT8 model with the inputs of its activation quantizers
exposed, so each grid's saturation (values beyond its range) is counted as the model
runs. A deterministic share (``sample``) also runs through the FP32 reference: top-1
agreement for class scores, output SQNR otherwise. Inputs are summarised per image
(mean and spread of each channel) and compared with the calibration images' by the
two-sample Kolmogorov–Smirnov test (scipy), Bonferroni over the features. All state is
fixed-size windows, so memory does not grow with the stream.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from qvision.errors import MissingExtraError, QVisionError
from qvision.intervals import wilson
from qvision.model.rewrite import expose_tensors
from qvision.runtime.session import make_session


@dataclass(frozen=True)
class Thresholds:
    """When to alert; each judged over the last ``window`` images, once ``min_images``."""

    window: int = 50
    min_images: int = 20
    agreement: float = 0.90  # alert when the interval's upper end falls below it
    saturation: float = 0.02  # share of a grid's values clipped, above the calibration's
    drift_p: float = 1e-3  # KS p-value, before Bonferroni over the features


@dataclass
class Alert:
    kind: str  # "agreement", "saturation" or "drift"
    message: str
    at_image: int  # images seen when it fired (1-based)


def _quantizer_ranges(model: onnx.ModelProto) -> dict[str, tuple[float, float]]:
    """Activation tensor -> the float range its QuantizeLinear covers."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    ranges = {}
    for n in model.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] in inits:
            continue
        scale = inits.get(n.input[1])
        zp = inits.get(n.input[2]) if len(n.input) > 2 else np.zeros((), np.uint8)
        if scale is None or zp is None or scale.size != 1:
            continue
        info = np.iinfo(zp.dtype)
        s, z = float(scale), int(zp)
        # a grid starting at zero (zero point at the type's minimum) clips negatives on
        # purpose: the ReLU it absorbed; only its top end saturates
        lo = -np.inf if z == info.min else (info.min - z - 0.5) * s
        ranges[n.input[0]] = (lo, (info.max - z + 0.5) * s)
    return ranges


def image_features(x: np.ndarray) -> np.ndarray:
    """Per image of an NCHW batch: each channel's mean and standard deviation."""
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    return np.concatenate([flat.mean(axis=2), flat.std(axis=2)], axis=1)


@dataclass
class _Window:
    size: int
    items: deque = field(default_factory=deque)

    def add(self, value) -> None:
        self.items.append(value)
        if len(self.items) > self.size:
            self.items.popleft()


class Monitor:
    """Shadow an INT8 model against its FP32 reference on a stream of input batches."""

    def __init__(
        self,
        int8: str,
        fp32: str,
        reference: np.ndarray,
        *,
        sample: float = 0.25,
        thresholds: Thresholds | None = None,
        threads: int | None = None,
    ):
        if not 0 < sample <= 1:
            raise QVisionError(f"--sample must be in (0, 1], got {sample}")
        self.t = thresholds or Thresholds()
        model = onnx.load(str(int8))
        self.ranges = _quantizer_ranges(model)
        if not self.ranges:
            raise QVisionError("no activation quantizers: not a QDQ INT8 model", int8)
        self.tensors = list(self.ranges)
        shown = expose_tensors(model, self.tensors)
        self.int8 = make_session(shown.SerializeToString(), threads)
        self.fp32 = make_session(str(fp32), threads)
        self.input = self.int8.get_inputs()[0].name
        self.n_out = len(model.graph.output)  # the model's own outputs come first
        self.outputs: list[np.ndarray] = []  # the last batch's INT8 outputs, to serve
        names = [o.name for o in self.int8.get_outputs()]
        # by name: the graph input is not a graph output, it is the batch itself
        self.where = {t: names.index(t) if t in names else None for t in self.tensors}
        self.every = max(1, round(1 / sample))
        self.ref_features = image_features(reference)
        self.baseline = self._saturation(reference)
        self.seen = 0
        self.sampled = 0
        self.agree = _Window(self.t.window)
        self.clipped = _Window(self.t.window)
        self.features = _Window(self.t.window)
        self.alerts: list[Alert] = []
        self.drift_p: float | None = None  # the last test's smallest adjusted p-value
        self._active: set[str] = set()

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.int8.run(None, {self.input: x})

    def _saturation(self, x: np.ndarray, batch: int = 8) -> np.ndarray:
        """Per tensor: the share of values outside the grid's range over the images of
        ``x``, run a few at a time (every activation of the model is an output here)."""
        parts = [
            self._clipped(self._run(x[i : i + batch]), x[i : i + batch])
            for i in range(0, len(x), batch)
        ]
        return np.concatenate(parts).mean(axis=0)

    def _clipped(self, outs: list[np.ndarray], x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        shares = np.empty((n, len(self.tensors)))
        for j, t in enumerate(self.tensors):
            lo, hi = self.ranges[t]
            k = self.where[t]
            v = (x if k is None else outs[k]).reshape(n, -1)
            shares[:, j] = ((v < lo) | (v > hi)).mean(axis=1)
        return shares

    def observe(self, batch: np.ndarray) -> list[Alert]:
        """Run one input batch (preprocessed, the model's layout); the alerts it raised.
        The INT8 outputs are in ``self.outputs``: a server answers with them, so the
        monitored run is the served one."""
        outs = self._run(batch)
        self.outputs = outs[: self.n_out]
        y8 = outs[0]
        clipped = self._clipped(outs, batch)
        feats = image_features(batch)
        new: list[Alert] = []
        for i in range(batch.shape[0]):
            self.seen += 1
            self.clipped.add(clipped[i])
            self.features.add(feats[i])
            if self.seen % self.every == 0:
                self.sampled += 1
                (yf,) = self.fp32.run(None, {self.input: batch[i : i + 1]})[:1]
                self.agree.add(bool(np.argmax(yf) == np.argmax(y8[i])))
            if len(self.features.items) >= self.t.min_images:
                new += self._check()
        self.alerts += new
        return new

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
        if state["agreement_ci95"] is not None and state["agreement_ci95"][1] < self.t.agreement:
            out += self._fire(
                "agreement",
                f"INT8 agrees with FP32 on {100 * state['agreement']:.0f} % of the last "
                f"{state['agreement_n']} sampled images (below {100 * self.t.agreement:.0f} %)",
            )
        else:
            self._active.discard("agreement")
        excess = state["saturation"] - self.baseline
        worst = int(np.argmax(excess))
        if excess[worst] > self.t.saturation:
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
        if pvals[j] * len(pvals) < self.t.drift_p:
            out += self._fire(
                "drift",
                f"input statistics drifted from the calibration images (feature {j}: "
                f"window mean {window[:, j].mean():.3f} vs {self.ref_features[:, j].mean():.3f}, "
                f"KS p = {pvals[j]:.1e})",
            )
        else:
            self._active.discard("drift")
        return out

    def state(self) -> dict:
        """The current window: agreement (with its Wilson interval), mean saturation per
        grid, images seen."""
        agree = list(self.agree.items)
        sat = np.array(self.clipped.items).mean(axis=0) if self.clipped.items else self.baseline
        return {
            "images": self.seen,
            "agreement": float(np.mean(agree)) if agree else None,
            "agreement_n": len(agree),
            "agreement_ci95": wilson(sum(agree), len(agree)) if agree else None,
            "saturation": sat,
        }
