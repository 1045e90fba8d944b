"""model/ops.py: the one table of where weighted layers keep weight, bias and channels."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from qvision.model.ops import layer


@pytest.mark.parametrize(
    ("node", "shape", "out_channels", "in_channels", "data_axis", "bias"),
    [
        (helper.make_node("Conv", ["x", "w", "b"], ["y"]), (8, 3, 3, 3), 8, 3, 1, "b"),
        (helper.make_node("Conv", ["x", "w"], ["y"], group=4), (8, 2, 3, 3), 8, 8, 1, None),
        (helper.make_node("ConvTranspose", ["x", "w"], ["y"]), (6, 4, 2, 2), 4, 6, 1, None),
        (helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1), (10, 16), 10, 16, 1, "b"),
        (helper.make_node("Gemm", ["x", "w"], ["y"]), (16, 10), 10, 16, 1, None),
        (helper.make_node("Gemm", ["x", "w"], ["y"], transA=1), (16, 10), 10, 16, 0, None),
        (helper.make_node("MatMul", ["x", "w"], ["y"]), (16, 10), 10, 16, -1, None),
    ],
)
def test_layer_facts(node, shape, out_channels, in_channels, data_axis, bias):
    lay = layer(node)
    assert shape[lay.out_axis] == out_channels
    assert lay.input_channels(shape) == in_channels
    assert lay.data_axis == data_axis and lay.bias_of(node) == bias
    w = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    rows = lay.as_rows(w)
    assert rows.shape == (out_channels, w.size // out_channels)
    # row o holds exactly the weights of output channel o
    np.testing.assert_array_equal(rows[1], np.take(w, 1, axis=lay.out_axis).ravel())
    np.testing.assert_array_equal(lay.from_rows(rows, shape), w)


def test_ops_without_weights_have_no_facts():
    assert layer(helper.make_node("Relu", ["x"], ["y"])) is None
