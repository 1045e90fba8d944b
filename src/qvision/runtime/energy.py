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
read once. It ranks precisions and models; it is not a measurement of this CPU. Shapes
come from ONNX shape inference, else from one ONNX Runtime run on a zero input; layers
neither can size, and ops it does not model, are listed in ``Energy.uncounted``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from pydantic import BaseModel

from qvision.model import ops
from qvision.runtime.inputs import fill_dims

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
    # layers with multiply-accumulates the estimate left out: "name (OpType)"
    uncounted: list[str] = []
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


# Layers with multiply-accumulates: op -> (index of the input, index of the weight). The
# integer-only ops (ORT's QOperator format) compute in int8 whatever feeds them.
MAC_OPS = {
    "Conv": (0, 1),
    "ConvTranspose": (0, 1),
    "Gemm": (0, 1),
    "MatMul": (0, 1),
    "ConvInteger": (0, 1),
    "MatMulInteger": (0, 1),
    "QLinearConv": (0, 3),
    "QLinearMatMul": (0, 3),
}
INTEGER_OPS = {"ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul"}
# Ops that multiply-accumulate but that the estimate does not model: listed as not counted.
UNMODELLED_OPS = {
    "Einsum", "LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention", "QAttention",
    "FusedConv", "FusedGemm", "FusedMatMul", "QGemm", "MatMulNBits",
}  # fmt: skip
# Ops that move a quantized weight without computing on it (DequantizeLinear -> Transpose)
_LAYOUT_OPS = {"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}
_TWO_GB = 2**31


def _input_dims(model: onnx.ModelProto, hw: tuple[int, int] | None) -> dict[str, list]:
    """Each graph input's dims at batch 1, dynamic H/W from ``hw``; None where still unknown."""
    inits = {t.name for t in model.graph.initializer}
    out = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        out[vi.name] = fill_dims(
            [d.dim_value or None for d in vi.type.tensor_type.shape.dim], 1, hw
        )
    return out


def _inferred_shapes(model: onnx.ModelProto, dims: dict[str, list]) -> dict[str, list[int]]:
    """Fully known shapes from ONNX shape inference, with the inputs fixed to ``dims``."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        for d, v in zip(vi.type.tensor_type.shape.dim, dims.get(vi.name, []), strict=False):
            if v is not None and not d.dim_value:
                d.ClearField("dim_param")
                d.dim_value = v
    # inference raises bare errors of many kinds; ONNX Runtime may still tell the shapes
    with contextlib.suppress(Exception):
        m = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    out = {}
    for v in [*m.graph.value_info, *m.graph.input, *m.graph.output]:
        tt = v.type.tensor_type
        shape = [d.dim_value for d in tt.shape.dim]
        if tt.HasField("shape") and all(s > 0 for s in shape):
            out[v.name] = shape
    return out


def _run_shapes(
    model: onnx.ModelProto, dims: dict[str, list], names: list[str]
) -> dict[str, list[int]]:
    """Shapes of ``names`` from one ONNX Runtime run on zero inputs of ``dims``; empty when
    an input is not fully known or the model does not run (the estimate says what it missed)."""
    if not names or any(None in d for d in dims.values()) or model.ByteSize() >= _TWO_GB:
        return {}
    from onnx.helper import tensor_dtype_to_np_dtype

    from qvision.runtime.session import make_session

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for name in names:  # untyped outputs: ORT takes each tensor's own type (fp16, int8...)
        if name not in have:
            m.graph.output.add().name = name
    types = {vi.name: vi.type.tensor_type.elem_type for vi in m.graph.input}
    feeds = {k: np.zeros(d, tensor_dtype_to_np_dtype(types[k])) for k, d in dims.items()}
    try:
        sess = make_session(m.SerializeToString(), threads=1, optimize=False)
        values = sess.run(names, feeds)
    except Exception:  # QVisionError or any of ORT's own exception types
        return {}
    return {n: list(v.shape) for n, v in zip(names, values, strict=True)}


def _constants(graph: onnx.GraphProto) -> set[str]:
    """Tensors computed from initializers alone (weights behind a DequantizeLinear, a
    Transpose, a Cast): read from memory once, not activations."""
    const = {t.name for t in graph.initializer}
    for node in graph.node:  # ONNX graphs are in topological order
        ins = [i for i in node.input if i]
        if (ins or node.op_type == "Constant") and all(i in const for i in ins):
            const.update(node.output)
    return const


def _nested(graph: onnx.GraphProto):
    """Nodes inside subgraphs (If, Loop, Scan): how often they run is not known."""
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from sub.node
                yield from _nested(sub)


def _label(node: onnx.NodeProto) -> str:
    return f"{node.name or node.output[0]} ({node.op_type})"


def _macs(node: onnx.NodeProto, x: list | None, w: list | None, out: list) -> int | None:
    """Multiply-accumulates of one batch-1 layer from its shapes; None if one it needs is
    unknown."""
    op = node.op_type
    if op in ("Conv", "ConvInteger", "QLinearConv"):  # W: Cout x Cin/groups x kernel
        return None if w is None else int(np.prod(out)) * int(np.prod(w[1:]))
    if op == "ConvTranspose":  # each input value scatters into Cout/groups x kernel outputs
        return None if x is None or w is None else int(np.prod(x)) * int(np.prod(w[1:]))
    if op == "Gemm":
        lay = ops.layer(node)
        depth = _depth(x, lay.data_axis, w, lay.in_axis)
    else:  # MatMul family: A [..., M, K] x B [..., K, N] (a 1-D B is [K])
        depth = _depth(x, -1, w, -2 if w and len(w) > 1 else 0)
    return None if depth is None else int(np.prod(out)) * depth


def _depth(x: list | None, x_axis: int, w: list | None, w_axis: int) -> int | None:
    """The summed-over dimension K, from whichever operand's shape is known."""
    if x:
        return x[x_axis]
    return w[w_axis] if w else None


def _dequantized(name: str, producer: dict[str, onnx.NodeProto]) -> bool:
    """Fed by a DequantizeLinear (through layout ops): computed in int8 by a QDQ runtime."""
    node = producer.get(name)
    while node is not None and node.op_type in _LAYOUT_OPS:
        node = producer.get(node.input[0])
    return node is not None and node.op_type == "DequantizeLinear"


def _layer_shapes(
    model: onnx.ModelProto, hw: tuple[int, int] | None, layers: list[onnx.NodeProto]
) -> tuple[dict[str, list[int]], int]:
    """Shapes of the layers' inputs and outputs: initializers, shape inference, then one
    ONNX Runtime run for those inference leaves unknown (run-time padding, computed
    Reshape targets); and how many came from that run."""
    dims = _input_dims(model, hw)
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    shapes.update(_inferred_shapes(model, dims))
    wanted = {t for n in layers for t in [n.output[0], *(n.input[i] for i in MAC_OPS[n.op_type])]}
    from_ort = _run_shapes(model, dims, sorted(t for t in wanted if t not in shapes))
    return {**shapes, **from_ort}, len(from_ort)


@dataclass
class _Tally:
    macs: dict[str, int] = field(default_factory=lambda: {"float": 0, "int8": 0})
    weight_bytes: float = 0.0
    act_bytes: float = 0.0
    uncounted: list[str] = field(default_factory=list)


def _count(
    node: onnx.NodeProto,
    shapes: dict[str, list[int]],
    const: set[str],
    producer: dict[str, onnx.NodeProto],
    tally: _Tally,
) -> None:
    """Add one layer's multiply-accumulates and memory traffic, or list it as not counted."""
    xi, wi = (node.input[i] for i in MAC_OPS[node.op_type])
    x, w, out = shapes.get(xi), shapes.get(wi), shapes.get(node.output[0])
    n = None if out is None else _macs(node, x, w, out)
    if n is None:
        tally.uncounted.append(_label(node))
        return
    w_int = node.op_type in INTEGER_OPS or _dequantized(wi, producer)
    integer = w_int and (node.op_type in INTEGER_OPS or _dequantized(xi, producer))
    tally.macs["int8" if integer else "float"] += n
    acts = int(np.prod(x)) if x else 0
    if wi in const:  # a weight: from DRAM once, in its stored precision
        tally.weight_bytes += int(np.prod(w)) * (1 if w_int else 4) if w else 0
    else:  # a second activation (attention's Q x K^T)
        acts += int(np.prod(w)) if w else 0
    tally.act_bytes += (acts + int(np.prod(out))) * (1 if integer else 4)


def estimate(model: onnx.ModelProto | str | Path, hw: tuple[int, int] | None) -> Energy:
    """Analytical energy per batch-1 inference of a float or QDQ model. Layers whose
    shapes neither shape inference nor one ONNX Runtime run can tell are listed in
    ``uncounted``, as are multiply-accumulates the estimate does not model."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    graph = model.graph
    layers = [
        n for n in graph.node if n.op_type in MAC_OPS and len(n.input) > MAC_OPS[n.op_type][1]
    ]
    shapes, from_ort = _layer_shapes(model, hw, layers)
    producer = {o: n for n in graph.node for o in n.output}
    const, tally = _constants(graph), _Tally()
    for node in layers:
        _count(node, shapes, const, producer, tally)
    tally.uncounted += [_label(n) for n in graph.node if n.op_type in UNMODELLED_OPS]
    tally.uncounted += [
        _label(n) for n in _nested(graph) if n.op_type in MAC_OPS.keys() | UNMODELLED_OPS
    ]
    compute = sum(MAC_PJ[p] * n for p, n in tally.macs.items()) * PJ
    weights = tally.weight_bytes * DRAM_PJ_PER_BYTE * PJ
    acts = 2 * tally.act_bytes * CACHE_PJ_PER_BYTE * PJ
    return Energy(
        joules=compute + weights + acts,
        method="estimate",
        macs=tally.macs,
        parts={"compute": compute, "weights": weights, "activations": acts},
        uncounted=tally.uncounted,
        notes=_notes(tally.uncounted, from_ort),
    )


def _notes(uncounted: list[str], from_ort: int) -> str:
    text = ASSUMPTIONS
    if from_ort:
        text += f"; shapes of {from_ort} tensors from one ONNX Runtime run on a zero input"
    if uncounted:
        n = len(uncounted)
        text += f"; {n} layer{'s' if n != 1 else ''} not counted: {', '.join(uncounted[:5])}"
        text += "…" if len(uncounted) > 5 else ""
    return text


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
