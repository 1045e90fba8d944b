"""The one simulator of a plan: the QDQ model the writer emits, run in ONNX Runtime beside
the float model it came from, with inner tensors exposed where asked.

Algorithms, the per-layer analysis and the report measure a plan through this instead of
each writing the model, opening sessions and comparing outputs their own way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from qvision.model.rewrite import expose_tensors
from qvision.qmath import OutputError
from qvision.quant.plan import QuantPlan
from qvision.quant.writer import write_qdq
from qvision.runtime.session import make_session


class Probe:
    """A model in ONNX Runtime whose outputs also include ``tensors``. Calling it with an
    input batch gives every output by name, the input included.

    ``optimize=False`` runs the graph as written: a QDQ model then computes its reference
    arithmetic and tensors in front of a QuantizeLinear stay observable; ``True`` runs the
    kernels ONNX Runtime deploys (fused, this machine's)."""

    def __init__(
        self,
        model: onnx.ModelProto,
        input_name: str,
        tensors: Sequence[str] = (),
        threads: int | None = None,
        optimize: bool = False,
    ):
        shown = expose_tensors(model, list(tensors)) if tensors else model
        self.session = make_session(shown.SerializeToString(), threads, optimize=optimize)
        self.input_name = input_name
        self.outputs = [o.name for o in self.session.get_outputs()]
        batch = self.session.get_inputs()[0].shape[0]
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        got = self.run(x)
        return {self.input_name: x, **dict(zip(self.outputs, got, strict=True))}

    def run(self, x: np.ndarray, names: Sequence[str] | None = None) -> list[np.ndarray]:
        """The named outputs (default: all, in graph order), without the dict. A model
        exported at a fixed batch (PaddlePaddle's at 1) runs the batch in pieces of it."""
        names = list(names) if names else None
        b = self.fixed_batch
        if b is None or x.shape[0] == b:
            return self.session.run(names, {self.input_name: x})
        parts = []
        for i in range(0, x.shape[0], b):
            part = x[i : i + b]
            pad = np.zeros((b - len(part), *x.shape[1:]), x.dtype)
            outs = self.session.run(names, {self.input_name: np.concatenate([part, pad])})
            parts.append([o[: len(part)] for o in outs])
        return [np.concatenate(outs) for outs in zip(*parts, strict=True)]


@dataclass
class Reference:
    """The float model's outputs on fixed batches, computed once and compared many times."""

    batches: list[np.ndarray]
    outputs: list[list[np.ndarray]]  # per batch, per model output (float32)


class Simulator:
    """A prepared float model and the QDQ models of its plans."""

    def __init__(self, model: onnx.ModelProto, input_name: str, threads: int | None = None):
        self.model = model
        self.input_name = input_name
        self.threads = threads
        self.output_names = [o.name for o in model.graph.output]

    def qdq(self, plan: QuantPlan) -> onnx.ModelProto:
        """The model the writer emits for ``plan`` (the same bytes ``quantize`` writes)."""
        return write_qdq(self.model, plan)

    def float_probe(self, tensors: Sequence[str] = (), optimize: bool = True) -> Probe:
        return Probe(self.model, self.input_name, tensors, self.threads, optimize)

    def probe(self, plan: QuantPlan, tensors: Sequence[str] = (), optimize: bool = False) -> Probe:
        """The plan's QDQ model, as written (``optimize=False``) or as deployed."""
        return Probe(self.qdq(plan), self.input_name, tensors, self.threads, optimize)

    def reference(self, batches: list[np.ndarray], max_bytes: float = np.inf) -> Reference:
        """Float outputs per batch; fewer batches where they would pass ``max_bytes`` (big
        dense outputs such as segmentation maps), since every trial compares with all."""
        probe = self.float_probe()
        outputs, used = [], 0
        for x in batches:
            outputs.append([o.astype(np.float32) for o in probe.run(x, self.output_names)])
            used += sum(o.nbytes for o in outputs[-1])
            if used >= max_bytes:
                break
        return Reference(batches[: len(outputs)], outputs)

    def output_errors(
        self,
        plan: QuantPlan,
        ref: Reference,
        optimize: bool = False,
        outputs: Sequence[int] | None = None,
    ) -> list[OutputError]:
        """Signal and noise of each model output (or those indexed by ``outputs``) of the
        plan's QDQ model against the float reference."""
        idx = list(range(len(self.output_names))) if outputs is None else list(outputs)
        names = [self.output_names[i] for i in idx]
        probe = self.probe(plan, optimize=optimize)
        errs = [OutputError() for _ in idx]
        for x, want in zip(ref.batches, ref.outputs, strict=True):
            got = probe.run(x, names)
            for e, i, g in zip(errs, idx, got, strict=True):
                e.update(want[i], g.astype(np.float32))
        return errs

    def relative_error(self, plan: QuantPlan, ref: Reference, optimize: bool = False) -> float:
        """Squared error of each output over the float output's power, summed over outputs."""
        return float(
            sum(e.noise / max(e.signal, 1e-30) for e in self.output_errors(plan, ref, optimize))
        )
