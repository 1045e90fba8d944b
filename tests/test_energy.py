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
