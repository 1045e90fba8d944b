"""ONNX Runtime sessions, created one way everywhere."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from qvision.errors import QVisionError
from qvision.runtime.machine import physical_cores


def make_session(
    model: str | Path | bytes,
    threads: int | None = None,
    providers: list[str] | None = None,
    optimize: bool = True,
) -> ort.InferenceSession:
    """A session with ``threads`` intra-op threads (default: physical cores).

    ``optimize=False`` runs the graph as written (no fusion), so a QDQ model computes its
    reference semantics and every tensor in front of a QuantizeLinear stays observable.
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or physical_cores()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    opts.log_severity_level = 3  # errors only: ORT's warnings are not the user's problem
    where = "<model bytes>" if isinstance(model, bytes) else model
    try:
        return ort.InferenceSession(
            model if isinstance(model, bytes) else str(model),
            sess_options=opts,
            providers=providers or ["CPUExecutionProvider"],
        )
    except Exception as exc:  # ORT raises its own exception types without a common base
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QVisionError(f"onnxruntime cannot load the model: {first}", where) from None
