"""Other quantizers, run on the same images and preprocessing as qvision, for side-by-side
benchmarks: ONNX Runtime's quantize_static and NNCF's nncf.quantize (ONNX backend)."""

from __future__ import annotations

import time
from pathlib import Path

from qvision.data import image_folder, iter_batches, parse_preprocess
from qvision.data.preprocess import METADATA_KEY
from qvision.model import load_model


class _Reader:
    """ORT CalibrationDataReader over the same images and preprocessing qvision uses."""

    def __init__(self, folder: Path, pre, input_name: str):
        self.batches = iter_batches(image_folder(folder), pre, batch_size=1)
        self.input_name = input_name

    def get_next(self):
        b = next(self.batches, None)
        return None if b is None else {self.input_name: b.inputs}

    def rewind(self):  # pragma: no cover - ORT may call it
        raise RuntimeError("single pass")


def ort_quantize(
    fp32: Path, out: Path, calib: Path, reduce_range: bool, pre=None, per_channel: bool = True
) -> float:
    """quantize_static (QDQ, MinMax); ``pre`` defaults to the model's qvision metadata."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    model = load_model(fp32, normalize=False)
    if pre is None:
        pre = parse_preprocess({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    reader = _Reader(calib, pre, model.graph.input[0].name)
    t0 = time.perf_counter()
    quantize_static(
        str(fp32),
        str(out),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        reduce_range=reduce_range,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return time.perf_counter() - t0


def nncf_quantize(fp32: Path, out: Path, calib: Path) -> float:
    """nncf.quantize with its defaults (mixed preset, fast bias correction) on all images."""
    import nncf
    import onnx

    model = onnx.load(str(fp32))
    pre = parse_preprocess({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    name = model.graph.input[0].name
    ds = image_folder(calib)
    items = [{name: b.inputs} for b in iter_batches(ds, pre, batch_size=1)]
    t0 = time.perf_counter()
    q = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items))
    seconds = time.perf_counter() - t0
    onnx.save(q, str(out))
    return seconds
