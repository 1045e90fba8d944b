"""Run the float model in ONNX Runtime with intermediate tensors exposed; feed observers.

Memory stays bounded: images stream in batches, observers keep fixed-size state, and
when exposing every tensor at once would need too much memory per batch, the tensors are
split into chunks and the data set is streamed once per chunk.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto

from qvision.data import Dataset, LoadReport, Preprocess, iter_batches
from qvision.errors import QVisionError
from qvision.model.rewrite import expose_tensors
from qvision.quant.calibrate.observers import MinMaxObserver, NonFiniteError, make_observer
from qvision.runtime.session import make_session

Progress = Callable[[int, int], None]


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    g = model.graph
    return {v.name: v for v in [*g.value_info, *g.input, *g.output]}


def _per_sample_bytes(vi: onnx.ValueInfoProto | None) -> int:
    """Bytes per image of a float tensor; unknown dims count as 64 (a cautious guess)."""
    if vi is None or not vi.type.tensor_type.HasField("shape"):
        return 4 * 64 * 64 * 64
    dims = [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 64
        for d in vi.type.tensor_type.shape.dim
    ]
    n = int(np.prod(dims[1:])) if len(dims) > 1 else 1
    return 4 * max(n, 1)


def plan_chunks(
    model: onnx.ModelProto, tensors: list[str], batch_size: int, budget_bytes: int
) -> list[list[str]]:
    """Group tensors so one batch of all of a group's tensors fits in ``budget_bytes``."""
    infos = _value_infos(model)
    chunks: list[list[str]] = [[]]
    used = 0
    for t in tensors:
        cost = _per_sample_bytes(infos.get(t)) * batch_size
        if chunks[-1] and used + cost > budget_bytes:
            chunks.append([])
            used = 0
        chunks[-1].append(t)
        used += cost
    return [c for c in chunks if c]


def float_tensors(model: onnx.ModelProto) -> list[str]:
    """Every float activation: graph inputs and node outputs (initializers excluded)."""
    infos = _value_infos(model)
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    names += [o for n in model.graph.node for o in n.output if o]
    out = []
    for name in names:
        vi = infos.get(name)
        elem = vi.type.tensor_type.elem_type if vi is not None else TensorProto.FLOAT
        if elem == TensorProto.FLOAT:
            out.append(name)
    return out


def collect(
    model: onnx.ModelProto,
    dataset: Dataset,
    preprocess: Preprocess,
    tensors: list[str],
    method: str | Callable[[str], object] = "minmax",
    input_name: str | None = None,
    batch_size: int = 1,
    budget_bytes: int = 512 * 2**20,
    threads: int | None = None,
    strict: bool = False,
    progress: Progress | None = None,
    transform=None,
) -> tuple[dict[str, MinMaxObserver], LoadReport]:
    """Observers for ``tensors`` after streaming ``dataset`` through the model
    (``transform(image, index)``, if given, between decoding and preprocessing)."""
    input_name = input_name or model.graph.input[0].name
    observers = {t: (method(t) if callable(method) else make_observer(method)) for t in tensors}
    chunks = plan_chunks(model, tensors, batch_size, budget_bytes)
    report = LoadReport()
    total = len(dataset) * len(chunks)
    done = 0
    for chunk in chunks:
        session = make_session(expose_tensors(model, chunk).SerializeToString(), threads)
        names = [o.name for o in session.get_outputs()]
        wanted = [(i, n) for i, n in enumerate(names) if n in observers and n in chunk]
        chunk_report = LoadReport()
        for batch in iter_batches(
            dataset, preprocess, batch_size, strict=strict, report=chunk_report, transform=transform
        ):
            outs = session.run(None, {input_name: batch.inputs})
            for i, name in wanted:
                try:
                    observers[name].update(outs[i])
                except NonFiniteError:
                    first = batch.samples[0].path
                    raise QVisionError(
                        f"activation '{name}' has NaN or Inf on the calibration batch starting at {first}; "
                        "check the preprocessing and the model",
                    ) from None
            if input_name in chunk and input_name in observers:
                observers[input_name].update(batch.inputs)
            done += len(batch.samples)
            if progress:
                progress(done + len(chunk_report.skipped), total)
        report = chunk_report  # every pass sees the same files; keep one report
    used = next(iter(observers.values())).count if observers else 0
    if observers and used == 0:
        raise QVisionError("no calibration image could be read", dataset.root)
    return observers, report
