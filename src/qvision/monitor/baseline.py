"""What the monitor compares a stream with: the calibration images' input statistics and the
share of each activation grid's values they clip. ``quantize`` measures it once and keeps
it in the manifest, so a deployment needs the model, its manifest and the FP32 reference,
not the calibration folder."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from qvision.errors import QVisionError
from qvision.model.load import fixed_batch
from qvision.model.rewrite import expose_tensors
from qvision.provenance import MonitorBaseline, Provenance, manifest_path
from qvision.qmath import int_limits
from qvision.runtime.session import make_session

SATURATION_PIXELS = 16 * 224 * 224  # the clipped shares' budget at quantize time (~a second)
SATURATION_IMAGES = (8, 16)  # but no fewer images than a rank test needs, nor more
FEATURE_IMAGES = 1000  # input statistics kept, at most


def quantizer_ranges(model: onnx.ModelProto) -> dict[str, tuple[float, float]]:
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
        qmin, qmax = int_limits(zp.dtype)
        s, z = float(scale), int(zp.astype(np.int64))
        # a grid starting at zero (zero point at the type's minimum) clips negatives on
        # purpose: the ReLU it absorbed; only its top end saturates
        lo = -np.inf if z == qmin else (qmin - z - 0.5) * s
        ranges[n.input[0]] = (lo, (qmax - z + 0.5) * s)
    return ranges


def image_features(x: np.ndarray) -> np.ndarray:
    """Per image of an NCHW batch: each channel's mean and standard deviation."""
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    return np.concatenate([flat.mean(axis=2), flat.std(axis=2)], axis=1)


class Grids:
    """The INT8 model run with every activation quantizer's input exposed: the model's own
    outputs first, then each grid's share of clipped values per image."""

    def __init__(self, model: onnx.ModelProto, source: str | Path, threads: int | None = None):
        self.ranges = quantizer_ranges(model)
        if not self.ranges:
            raise QVisionError("no activation quantizers: not a QDQ INT8 model", source)
        self.tensors = list(self.ranges)
        shown = expose_tensors(model, self.tensors)
        self.session = make_session(shown.SerializeToString(), threads)
        self.input = self.session.get_inputs()[0].name
        self.fixed = fixed_batch(model.graph.input[0])
        self.n_out = len(model.graph.output)
        names = [o.name for o in self.session.get_outputs()]
        # by name: the graph input is not a graph output, it is the batch itself
        self.where = {t: names.index(t) if t in names else None for t in self.tensors}

    def run(self, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """The model's outputs and [images, grids] clipped shares for batch ``x``."""
        n = x.shape[0]
        outs = self._outputs(x)
        shares = np.empty((n, len(self.tensors)))
        for j, t in enumerate(self.tensors):
            lo, hi = self.ranges[t]
            k = self.where[t]
            v = (x if k is None else outs[k]).reshape(n, -1)
            shares[:, j] = ((v < lo) | (v > hi)).mean(axis=1)
        return outs[: self.n_out], shares

    def _outputs(self, x: np.ndarray) -> list[np.ndarray]:
        if not self.fixed or len(x) == self.fixed:
            return self.session.run(None, {self.input: x})
        parts = []
        for i in range(0, len(x), self.fixed):
            chunk = x[i : i + self.fixed]
            short = self.fixed - len(chunk)
            if short:  # pad with copies of the last image; their outputs are dropped
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], short, axis=0)])
            parts.append(
                [o[: self.fixed - short] for o in self.session.run(None, {self.input: chunk})]
            )
        return [np.concatenate(p) for p in zip(*parts, strict=True)]

    def shares(self, x: np.ndarray, batch: int = 8) -> np.ndarray:
        """[images, grids] clipped shares over ``x``, a few images at a time (every
        activation is an output here: a whole calibration set at once takes gigabytes)."""
        parts = [self.run(x[i : i + batch])[1] for i in range(0, len(x), batch)]
        return np.concatenate(parts)


def measure(
    model: onnx.ModelProto, batches: Iterable[np.ndarray], task: str | None, threads=None
) -> MonitorBaseline:
    """The baseline of an INT8 model on its calibration inputs (preprocessed batches)."""
    grids = Grids(model, "<model>", threads)
    feats: list[np.ndarray] = []
    shares: list[np.ndarray] = []
    seen, want = 0, None
    for x in batches:
        x = x[: FEATURE_IMAGES - seen]
        feats.append(image_features(x))
        if want is None:
            lo, hi = SATURATION_IMAGES
            want = int(np.clip(SATURATION_PIXELS // max(1, x[0, 0].size), lo, hi))
        room = min(len(x), want - sum(len(s) for s in shares))
        for i in range(0, max(room, 0), 8):
            shares.append(grids.run(x[i : min(i + 8, room)])[1])
        seen += len(x)
        if seen >= FEATURE_IMAGES:
            break
    if not feats:
        raise QVisionError("no calibration inputs for the monitor's baseline")
    clipped = np.round(np.concatenate(shares), 5)
    return MonitorBaseline(
        images=seen,
        task=task,
        features=np.round(np.concatenate(feats), 6).tolist(),
        saturation_images=len(clipped),
        saturation={t: clipped[:, j].tolist() for j, t in enumerate(grids.tensors)},
    )


def from_manifest(model: str | Path) -> MonitorBaseline:
    """The baseline ``quantize`` stored in ``model``'s manifest, checked to describe it."""
    from qvision.fileio import sha256_file

    path = manifest_path(model)
    if not path.is_file():
        raise QVisionError(
            f"no manifest beside the model ({path.name}); pass the calibration images (--calib)",
            model,
        )
    try:
        record = Provenance.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError:
        raise QVisionError("not a qvision manifest", path) from None
    if record.monitor is None:
        raise QVisionError(
            "the manifest has no calibration statistics (an older qvision wrote it); "
            "pass the calibration images (--calib)",
            path,
        )
    if record.output_model.sha256 != sha256_file(model):
        raise QVisionError(f"the manifest describes another model than {Path(model).name}", path)
    return record.monitor
