"""The PyTorch simulation in ONNX Runtime's integer arithmetic (model/torch_int): on a
MobileNet-style classifier, every output equals ONNX Runtime's on the written QDQ model;
and a bias too large for int32 on its channel's step gets a larger step instead of
wrapping around in ONNX Runtime's accumulator."""

import numpy as np
import onnxruntime as ort
import pytest

from qvision.data import image_folder, iter_batches
from qvision.data.preprocess import parse_preprocess
from qvision.model.rewrite import prepare_for_quantization
from qvision.quant.constraints import fit_biases
from qvision.quant.writer import write_qdq

from qdq_models import PRE16, mobilenet_like, plan_context

torch = pytest.importorskip("torch")


def _ort(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def _steps(flat_dir, dead_bias: float, fit: bool):
    """max |ONNX Runtime − simulation| in output steps (range/255): float and exact mode."""
    from qvision.quant.algorithms.qat import FakeQuant

    model = mobilenet_like(dead_bias)
    ctx = plan_context(model, flat_dir, weight_bits=8)
    changed = fit_biases(model, ctx.plan) if fit else []
    x = next(iter_batches(image_folder(flat_dir), PRE16, batch_size=4)).inputs
    got = _ort(write_qdq(model, ctx.plan), x)
    fq = FakeQuant(ctx)
    step = (got.max() - got.min()) / 255
    with torch.no_grad():
        out = {e: fq.forward(torch.from_numpy(x), exact=e)[0].numpy() for e in (False, True)}
    return {e: float(np.abs(v - got).max() / step) for e, v in out.items()}, fq, changed


def test_exact_mode_is_onnx_runtime(flat_dir):
    steps, fq, _ = _steps(flat_dir, 0.0, fit=False)
    kinds = sorted(u.core.op_type for u in fq.graph.units.values())
    # every fused unit found: 4 Conv (each with its Clip dropped), the Add, the pool
    assert kinds == ["Add", "Conv", "Conv", "Conv", "Conv", "GlobalAveragePool"], kinds
    assert steps[True] < 1e-3, steps  # the same integers; only the float Gemm may differ


def test_bias_too_large_for_int32_gets_a_larger_step(flat_dir):
    """Without the fix the written model wraps around in int32 and leaves the simulation
    (which adds the clipped bias in float) far behind; with it, they agree exactly."""
    before, _, _ = _steps(flat_dir, 0.5, fit=False)
    after, _, changed = _steps(flat_dir, 0.5, fit=True)
    assert changed == ["w1"], changed
    assert before[True] > 1, before
    assert after[True] < 1e-3, after


@pytest.mark.slow
def test_exact_on_mobilenetv2(tmp_path, photos):
    """The zoo MobileNetV2 at 4-bit weights (nearest rounding, min-max grids): ~50 layers
    over which the float simulation's one-off roundings grow to steps; exact mode stays
    on ONNX Runtime's values."""
    from qvision.model.load import load_model
    from qvision.quant.algorithms.qat import FakeQuant
    from qvision.zoo.registry import export_model

    path = export_model("mobilenetv2", tmp_path / "mobilenetv2.onnx")
    model = prepare_for_quantization(load_model(path))
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in photos:
        (folder / p.name).write_bytes(p.read_bytes())
    pre = parse_preprocess("imagenet")
    ctx = plan_context(model, folder, weight_bits=4, pre=pre)
    x = next(iter_batches(image_folder(folder), pre, batch_size=4)).inputs
    got = _ort(write_qdq(model, ctx.plan), x)
    step = (got.max() - got.min()) / 255
    fq = FakeQuant(ctx)
    with torch.no_grad():
        out = {e: fq.forward(torch.from_numpy(x), exact=e)[0].numpy() for e in (False, True)}
    steps = {e: float(np.abs(v - got).max() / step) for e, v in out.items()}
    assert len(fq.graph.units) > 50 and steps[True] < 0.01, steps
