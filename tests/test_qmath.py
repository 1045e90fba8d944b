"""Quantization arithmetic: properties (hypothesis) and agreement with ONNX Runtime's kernels."""

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from qvision.qmath import (
    QFormat,
    dequantize,
    fake_quantize,
    qparams,
    quantize,
    quantize_bias,
    weight_ranges,
)

FORMATS = [
    QFormat("uint8", 8, symmetric=False),
    QFormat("int8", 8, symmetric=True, narrow=True),
    QFormat("int8", 7, symmetric=True, narrow=True),
    QFormat("int8", 8, symmetric=False),
    QFormat("uint8", 8, symmetric=True),
    QFormat("int4", 4, symmetric=True, narrow=True),
    QFormat("int16", 16, symmetric=True),
]
floats = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(lo=floats, hi=floats, fmt=st.sampled_from(FORMATS))
def test_zero_is_exact_and_range_is_covered(lo, hi, fmt):
    lo, hi = min(lo, hi), max(lo, hi)
    scale, zp = qparams(lo, hi, fmt)
    assert scale > 0 and fmt.qmin <= zp <= fmt.qmax
    assert fake_quantize(np.zeros(3, np.float32), scale, zp, fmt).tolist() == [0.0, 0.0, 0.0]
    # values inside [lo, hi] land within half a step of themselves
    xs = np.linspace(min(lo, 0), max(hi, 0), 101, dtype=np.float32)
    err = np.abs(fake_quantize(xs, scale, zp, fmt) - xs)
    assert err.max() <= scale * 0.5 * (1 + 1e-4) + 1e-6 * np.abs(xs).max()


@settings(max_examples=100, deadline=None)
@given(
    q=st.lists(st.integers(-128, 127), min_size=1, max_size=50),
    s=st.floats(9.999999747378752e-05, 10, width=32),
)
def test_quantize_inverts_dequantize_on_the_grid(q, s):
    fmt = QFormat("int8", 8, symmetric=False)
    qa = np.array(q, np.int8)
    zp = np.int64(3)
    back = quantize(dequantize(qa, s, zp), s, zp, fmt)
    expected = np.clip(qa.astype(np.int64), fmt.qmin, fmt.qmax)
    assert np.array_equal(back.astype(np.int64), expected)


def test_round_half_to_even_and_saturation():
    fmt = QFormat("uint8", 8, symmetric=False)
    x = np.array([0.5, 1.5, 2.5, -3.0, 300.0], np.float32)
    assert quantize(x, np.float32(1.0), np.int64(0), fmt).tolist() == [0, 2, 2, 0, 255]


def test_formats():
    assert (QFormat("int8", 7, True, True).qmin, QFormat("int8", 7, True, True).qmax) == (-63, 63)
    assert (QFormat("int4", 4, True, False).qmin, QFormat("uint4", 4, False).qmax) == (-8, 15)
    with pytest.raises(ValueError):
        QFormat("int8", 9)


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f.dtype in ("int8", "uint8")])
def test_matches_onnxruntime_quantizelinear(fmt):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 6, 5)) * 3).astype(np.float32)
    lo, hi = weight_ranges(x, axis=1)
    scale, zp = qparams(lo, hi, fmt)
    elem = TensorProto.UINT8 if fmt.dtype == "uint8" else TensorProto.INT8
    g = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [
            helper.make_tensor_value_info("q", elem, list(x.shape)),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape)),
        ],
        [
            numpy_helper.from_array(scale, "s"),
            numpy_helper.from_array(zp.astype(fmt.np_dtype), "z"),
        ],
    )
    sess = ort.InferenceSession(
        helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    q, y = sess.run(None, {"x": x})
    ours = quantize(x, scale, zp, fmt, axis=1)
    # ORT saturates to the container; our grid may be narrower (7-bit, narrow range)
    assert (
        np.abs(ours.astype(np.int64) - np.clip(q.astype(np.int64), fmt.qmin, fmt.qmax)).max() <= 1
    )
    assert (
        np.array_equal(ours, np.clip(q.astype(np.int64), fmt.qmin, fmt.qmax).astype(ours.dtype))
        or fmt.bits < 8
    )
    np.testing.assert_allclose(dequantize(q, scale, zp, axis=1), y, rtol=0, atol=1e-6)


def test_bias_quantization():
    b = np.array([0.5, -1.25, 0.0], np.float32)
    q, s = quantize_bias(b, 0.1, np.array([0.01, 0.02, 0.03], np.float32))
    assert q.dtype == np.int32 and np.allclose(s, [0.001, 0.002, 0.003])
    assert q.tolist() == [500, -625, 0]
