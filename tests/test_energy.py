"""Energy: MAC counts and precisions from the graph; the estimate is labelled as such."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from qvision import api
from qvision.runtime.energy import (
    CACHE_PJ_PER_BYTE,
    DRAM_PJ_PER_BYTE,
    MAC_PJ,
    energy_per_inference,
    estimate,
)

from conftest import tiny_classifier


def _model(nodes, inputs, outputs, inits=()):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, d) for n, d in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(a, n) for n, a in inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _attention(d: int = 8):
    """x [1, 4, d]: x @ x^T (two activations) and x @ Transpose(W) (a weight behind an op)."""
    w = np.ones((6, d), np.float32)
    return _model(
        [
            helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1], name="xt"),
            helper.make_node("MatMul", ["x", "xt"], ["scores"], name="qk"),
            helper.make_node("Transpose", ["w"], ["wt"], name="wt"),
            helper.make_node("MatMul", ["x", "wt"], ["proj"], name="proj"),
        ],
        [("x", [1, 4, d])],
        ["scores", "proj"],
        [("w", w)],
    )


def _same_padded(cout: int = 8):
    """Pad by a computed amount (H // 2, as TorchScript's "same" padding computes it), then
    Conv 3->cout 3x3: the Floor defeats ONNX shape inference, only a run tells the shapes."""
    k = numpy_helper.from_array
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "two"], ["h"]),
        helper.make_node("Cast", ["h"], ["hf"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["hf", "twof"], ["half"]),
        helper.make_node("Floor", ["half"], ["fl"]),
        helper.make_node("Cast", ["fl"], ["p"], to=TensorProto.INT64),
        helper.make_node("Mul", ["p", "mask"], ["pads"]),
        helper.make_node("Pad", ["x", "pads"], ["padded"]),
        helper.make_node("Conv", ["padded", "w"], ["y"], name="conv"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            k(np.array([2], np.int64), "two"),
            k(np.array(2.0, np.float32), "twof"),
            k(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "mask"),
            k(np.ones((cout, 3, 3, 3), np.float32), "w"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


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


def test_counts_activation_matmuls_and_weights_behind_ops():
    e = estimate(_attention(), None)
    # scores [1,4,4] x K 8; proj [1,4,6] x K 8
    assert e.macs == {"float": 16 * 8 + 24 * 8, "int8": 0} and e.uncounted == []
    # only W (6x8 floats) is a weight; x^T is an activation read by qk
    assert e.parts["weights"] == pytest.approx(48 * 4 * DRAM_PJ_PER_BYTE * 1e-12)
    acts = (32 + 32 + 16) + (32 + 24)  # qk: x, x^T, scores; proj: x, proj
    assert e.parts["activations"] == pytest.approx(2 * acts * 4 * CACHE_PJ_PER_BYTE * 1e-12)
    assert estimate(_attention(16), None).joules > e.joules


def test_counts_conv_transpose():
    w = np.ones((4, 2, 3, 3), np.float32)  # Cin 4 -> Cout 2, 3x3
    m = _model(
        [helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2])],
        [("x", [1, 4, 8, 8])],
        ["y"],
        [("w", w)],
    )
    assert estimate(m, None).macs["float"] == 4 * 8 * 8 * 2 * 9


def test_shapes_only_a_run_can_tell_come_from_onnx_runtime():
    # 16x16 padded by 8 on each side: 32x32 -> 3x3 valid conv: 30x30 outputs x 27
    e = estimate(_same_padded(), (16, 16))
    assert e.macs["float"] == 30 * 30 * 8 * 27 and e.uncounted == []
    assert "ONNX Runtime run" in e.notes and e.method == "estimate"
    # two models that differ only where inference is blind no longer look the same
    assert estimate(_same_padded(16), (16, 16)).joules > e.joules


def test_layers_it_cannot_count_are_listed():
    # no size for a dynamic input: neither inference nor a run can give the Conv's shape
    e = estimate(_same_padded(), None)
    assert e.uncounted == ["conv (Conv)"] and e.macs["float"] == 0
    assert "1 layer not counted: conv (Conv)" in e.notes and "Horowitz" in e.notes
    # an op whose arithmetic the estimate does not model
    m = _model(
        [
            helper.make_node("Einsum", ["x", "x"], ["e"], equation="ij,kj->ik", name="ein"),
            helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
        ],
        [("x", [4, 8])],
        ["e", "y"],
        [("w", np.ones((8, 2), np.float32))],
    )
    e = estimate(m, None)
    assert e.uncounted == ["ein (Einsum)"] and e.macs["float"] == 4 * 2 * 8


def test_bench_and_report_say_how_many_layers_were_not_counted(tmp_path, monkeypatch):
    import onnx

    from qvision.report.html import ReportInputs, write_report
    from qvision.runtime import energy

    monkeypatch.setattr(energy, "_rapl_files", list)  # the estimate, whatever the machine
    m = _model(
        [helper.make_node("Einsum", ["x", "x"], ["e"], equation="ij,kj->ik", name="ein")],
        [("x", [4, 8])],
        ["e"],
    )
    path = tmp_path / "ein.onnx"
    onnx.save(m, str(path))
    res = api.benchmark([path], rounds=1, seconds=0.05, memory=False)
    assert res.models[0].energy_uncounted == ["ein (Einsum)"]
    assert res.models[0].uncounted_text() == "1 layer not counted"
    page = write_report(ReportInputs(bench=res), tmp_path / "report").read_text()
    assert "1 layer not counted" in page


def test_bench_reports_energy_per_inference(tmp_path, flat_dir):
    src = tiny_classifier(tmp_path / "t.onnx")
    res = api.benchmark([src], rounds=1, seconds=0.05, memory=False)
    m = res.models[0]
    expected = energy_per_inference(src, (32, 32))
    assert m.energy_method == expected.method and m.energy_j == pytest.approx(expected.joules)


class _Clock:
    """A virtual clock for the energy module: sleeping and running move it, nothing else
    does, so the NVML arithmetic is checked without the machine's scheduling in it."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now

    def sleep(self, s):
        self.now += s


class _FakeNvml:
    """A scripted board counter: 50 W whatever happens, plus 10 mJ per inference."""

    class NVMLError(Exception):
        pass

    def __init__(self, clock):
        self.clock, self.runs, self.open = clock, 0, False

    def nvmlInit(self):
        self.open = True

    def nvmlShutdown(self):
        self.open = False

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return "Fake GPU"

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        return round(50e3 * self.clock.now + 10 * self.runs)  # mJ


def test_nvml_splits_idle_from_inference_energy(monkeypatch):
    import sys

    from qvision.runtime import energy

    clock = _Clock()
    fake = _FakeNvml(clock)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(energy, "time", clock)

    def run():  # 1 ms of work per inference
        fake.runs += 1
        clock.now += 1e-3

    e = energy.measure_nvml(run, seconds=0.2, idle=0.2)
    assert e.method == "nvml" and not fake.open
    assert e.parts["above-idle"] == pytest.approx(0.010, abs=1e-6)
    assert e.joules == pytest.approx(e.parts["idle"] + e.parts["above-idle"])
    assert "Fake GPU" in e.notes and "50 W idle" in e.notes


def test_nvml_absent_means_no_measurement(monkeypatch):
    import sys

    from qvision.runtime.energy import measure_nvml

    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    assert measure_nvml(lambda: None, seconds=0.01, idle=0.01) is None


# ONNX Runtime warns that it falls back to the CPU: the case under test
@pytest.mark.filterwarnings("ignore:Specified provider:UserWarning")
def test_gpu_provider_without_a_gpu_build_is_not_reported_as_nvml(tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has the CUDA provider")
    src = tiny_classifier(tmp_path / "t.onnx")
    e = energy_per_inference(src, (32, 32), providers=["CUDAExecutionProvider"])
    assert e.method in ("estimate", "rapl")


def test_nvml_measures_a_real_gpu_workload():
    """Runs where a GPU, its driver and nvidia-ml-py are all present (the lent GPU machine)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("pynvml")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from qvision.runtime.energy import measure_nvml

    a = torch.randn(4096, 4096, device="cuda")

    def run():
        for _ in range(8):
            a @ a
        torch.cuda.synchronize()

    e = measure_nvml(run, seconds=2.0)
    assert e is not None and e.method == "nvml", "NVML could not read the energy counter"
    watts = float(e.notes.split(" W average")[0].rsplit("(", 1)[1])
    print(f"\nNVML: {e.joules * 1e3:.1f} mJ per run, {e.notes}")
    assert 10 < watts < 2000
    assert e.parts["above-idle"] > 0 and e.parts["idle"] > 0
