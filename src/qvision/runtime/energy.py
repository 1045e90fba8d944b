"""Energy per inference: measured where the machine exposes a counter, else estimated.

Measured: Intel/AMD RAPL package counters (``/sys/class/powercap/*/energy_uj``), read
around a timed loop; the whole package's energy, so idle and other work count too. On an
NVIDIA GPU (a session on ONNX Runtime's CUDA or TensorRT provider), the board's energy
counter through NVML (``nvidia-ml-py``), with the idle draw measured beside it.

Estimated (labelled "estimate"): multiply-accumulates and memory traffic of the graph
times per-operation energies from Horowitz, "Computing's energy problem" (ISSCC 2014,
45 nm): fp32 multiply 3.7 pJ + add 0.9 pJ; int8 multiply 0.2 pJ + int32 add 0.1 pJ;
DRAM about 20 pJ per bit (1.3-2.6 nJ per 64-bit access, low end) for weights, read once
per inference; a cache access about 10 pJ per 64 bits for activations, written once and
read once. It ranks precisions and models; it is not a measurement of this CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from pydantic import BaseModel

PJ = 1e-12
MAC_PJ = {"float": 3.7 + 0.9, "int8": 0.2 + 0.1}
DRAM_PJ_PER_BYTE = 20 * 8
CACHE_PJ_PER_BYTE = 10 / 8
ASSUMPTIONS = (
    "Horowitz ISSCC 2014 (45 nm): MAC fp32 4.6 pJ, int8 0.3 pJ; weights from DRAM at "
    "160 pJ/byte once per inference; activations through cache at 1.25 pJ/byte, written "
    "and read once; other ops and control ignored"
)


class Energy(BaseModel):
    joules: float  # per inference (batch 1)
    method: str  # "rapl" or "nvml" (measured) or "estimate"
    macs: dict[str, int] = {}  # by precision (estimate)
    # joules: compute, weights, activations (estimate); idle, above-idle (nvml)
    parts: dict[str, float] = {}
    notes: str = ""


def _rapl_files() -> list[Path]:
    root = Path("/sys/class/powercap")
    if not root.is_dir():
        return []
    files = [p / "energy_uj" for p in root.glob("intel-rapl:*") if ":" not in p.name[11:]]
    return [f for f in files if f.is_file() and _read(f) is not None]


def _read(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def measure_rapl(run: Callable[[], object], seconds: float = 2.0) -> Energy | None:
    """Joules per call of ``run`` from the package counters, or None without readable RAPL."""
    files = _rapl_files()
    if not files:
        return None
    run()
    before = [_read(f) for f in files]
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        run()
        n += 1
    after = [_read(f) for f in files]
    if any(v is None for v in before + after):
        return None
    # counters wrap; a wrap inside two seconds shows as a negative difference
    uj = sum(a - b for a, b in zip(after, before, strict=True) if a >= b)
    return Energy(
        joules=uj * 1e-6 / max(n, 1),
        method="rapl",
        notes=f"package counters over {n} runs; includes idle and other processes",
    )


GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def _nvml():
    """The NVML module, initialised, or None (no nvidia-ml-py, no driver, no GPU)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    return pynvml


def measure_nvml(
    run: Callable[[], object], seconds: float = 2.0, index: int = 0, idle: float = 1.0
) -> Energy | None:
    """Joules per call of ``run`` (which must return when the GPU work is done) from GPU
    ``index``'s board energy counter, or None where NVML cannot read one (pre-Volta GPUs,
    no driver). The board draws tens of watts doing nothing; ``idle`` seconds of sleep
    measure that draw first so the result can say how much of each joule is idle."""
    nv = _nvml()
    if nv is None:
        return None
    try:
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        name = nv.nvmlDeviceGetName(handle)

        def mj() -> int:  # millijoules since the driver loaded
            return nv.nvmlDeviceGetTotalEnergyConsumption(handle)

        e0, t0 = mj(), time.perf_counter()
        time.sleep(idle)
        idle_w = (mj() - e0) * 1e-3 / (time.perf_counter() - t0)
        run()
        e0, n, t0 = mj(), 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            run()
            n += 1
        spent, elapsed = (mj() - e0) * 1e-3, time.perf_counter() - t0
    except nv.NVMLError:
        return None
    finally:
        nv.nvmlShutdown()
    n = max(n, 1)
    idle_j = min(idle_w * elapsed, spent) / n
    return Energy(
        joules=spent / n,
        method="nvml",
        parts={"idle": idle_j, "above-idle": spent / n - idle_j},
        notes=(
            f"{name if isinstance(name, str) else name.decode()} board energy over {n} runs "
            f"({spent / elapsed:.0f} W average, {idle_w:.0f} W idle before); includes other "
            "work on the GPU"
        ),
    )


def _shapes(model: onnx.ModelProto, hw: tuple[int, int] | None) -> dict[str, list[int]]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, [1, None, *(hw or (None, None))], strict=False):
        if v is not None and not d.dim_value:
            d.ClearField("dim_param")
            d.dim_value = v
    m = onnx.shape_inference.infer_shapes(m, strict_mode=False)
    out = {}
    for v in [*m.graph.value_info, *m.graph.input, *m.graph.output]:
        shape = [d.dim_value for d in v.type.tensor_type.shape.dim]
        if shape and all(s > 0 for s in shape):
            out[v.name] = shape
    return out


def estimate(model: onnx.ModelProto | str | Path, hw: tuple[int, int] | None) -> Energy:
    """Analytical energy per batch-1 inference of a float or QDQ model."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    shapes = _shapes(model, hw)
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}

    def integer(name: str) -> tuple[bool, np.ndarray | None]:
        """(fed by a DequantizeLinear of an integer tensor, the weight values if constant)."""
        node = producer.get(name)
        if node is not None and node.op_type == "DequantizeLinear":
            src = inits.get(node.input[0])
            return True, None if src is None else numpy_helper.to_array(src)
        return False, numpy_helper.to_array(inits[name]) if name in inits else None

    macs = {"float": 0, "int8": 0}
    weight_bytes = act_bytes = 0.0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        out = shapes.get(node.output[0])
        x_int, _ = integer(node.input[0])
        w_int, w = integer(node.input[1])
        if out is None or w is None:
            continue
        if node.op_type == "Conv":
            depth = int(np.prod(w.shape[1:]))  # Cin/groups x kernel
        elif node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
            depth = w.shape[1]
        else:
            depth = w.shape[0]
        precision = "int8" if x_int and w_int else "float"
        macs[precision] += int(np.prod(out)) * depth
        size = 1 if precision == "int8" else 4
        weight_bytes += w.size * (1 if w_int else 4)
        x = shapes.get(node.input[0])
        act_bytes += ((np.prod(x) if x else 0) + np.prod(out)) * size
    compute = sum(MAC_PJ[p] * n for p, n in macs.items()) * PJ
    weights = weight_bytes * DRAM_PJ_PER_BYTE * PJ
    acts = 2 * act_bytes * CACHE_PJ_PER_BYTE * PJ
    return Energy(
        joules=compute + weights + acts,
        method="estimate",
        macs=macs,
        parts={"compute": compute, "weights": weights, "activations": acts},
        notes=ASSUMPTIONS,
    )


def energy_per_inference(
    path: str | Path,
    hw: tuple[int, int],
    threads: int | None = None,
    providers: list[str] | None = None,
) -> Energy:
    """Measured with NVML for a session on a GPU provider, with RAPL for one on the CPU
    where the counters are readable, else the analytical estimate."""
    on_gpu = bool(set(providers or []) & set(GPU_PROVIDERS))
    if hw is not None and (on_gpu or _rapl_files()):
        from qvision.runtime.session import make_session

        sess = make_session(str(path), threads, providers)
        inp = sess.get_inputs()[0]
        x = np.random.default_rng(0).random((1, 3, *hw), np.float32)

        def run():
            return sess.run(None, {inp.name: x})

        # ORT falls back to the CPU provider when the GPU one cannot load
        gpu = set(sess.get_providers()) & set(GPU_PROVIDERS)
        measured = measure_nvml(run) if gpu else measure_rapl(run)
        if measured is not None:
            return measured
    return estimate(path, hw)
