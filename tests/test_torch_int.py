"""The PyTorch simulation in ONNX Runtime's integer arithmetic (model/torch_int): on a
MobileNet-style classifier, every output equals ONNX Runtime's on the written QDQ model;
and a bias too large for int32 on its channel's step gets a larger step instead of
wrapping around in ONNX Runtime's accumulator."""

import numpy as np
import onnxruntime as ort
import pytest

from qvision.data import image_folder, iter_batches
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
