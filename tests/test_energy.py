"""Energy: MAC counts and precisions from the graph; the estimate is labelled as such."""

import pytest

from qvision import api
from qvision.runtime.energy import MAC_PJ, energy_per_inference, estimate

from conftest import tiny_classifier


def test_estimate_counts_macs_by_precision(tmp_path, flat_dir):
    src = tiny_classifier(tmp_path / "t.onnx", classes=10, size=32)
    # Conv 3->8, 3x3, stride 2 on 32x32: 16x16x8 outputs x 27; Gemm 8->10
    macs = 16 * 16 * 8 * 27 + 8 * 10
    fp32 = estimate(src, (32, 32))
    assert fp32.method == "estimate" and fp32.macs == {"float": macs, "int8": 0}
    assert fp32.parts["compute"] == pytest.approx(macs * MAC_PJ["float"] * 1e-12)
    q = tmp_path / "q.onnx"
    api.quantize(src, q, flat_dir)
    int8 = estimate(q, (32, 32))
    assert int8.macs == {"float": 0, "int8": macs}
    assert int8.joules < fp32.joules / 3
    assert "Horowitz" in int8.notes


def test_bench_reports_energy_per_inference(tmp_path, flat_dir):
    src = tiny_classifier(tmp_path / "t.onnx")
    res = api.benchmark([src], rounds=1, seconds=0.05, memory=False)
    m = res.models[0]
    expected = energy_per_inference(src, (32, 32))
    assert m.energy_method == expected.method and m.energy_j == pytest.approx(expected.joules)
