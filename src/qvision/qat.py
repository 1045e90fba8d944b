"""Quantization-aware training in your own PyTorch loop.

    qm = qvision.qat.prepare(module, example_input, calib="calib/", preprocess="imagenet")
    optim = torch.optim.Adam(qm.parameters(), lr=1e-3)
    for x, y in loader:            # your data, your loss, your schedule
        loss = criterion(qm(x), y)
        optim.zero_grad(); loss.backward(); optim.step()
    qvision.qat.export(qm, "model.int8.onnx")

``prepare`` exports the module to ONNX, runs the target's PTQ pipeline on the calibration
images, and returns the plan's QDQ model as a module: latent weights in grid steps, weight
and activation steps, biases on the int32 grid the writer uses. Its forward *is* the INT8
model (straight-through rounding), so ``export`` writes exactly what was trained, through
the same writer as ``qvision quantize``. Parameter groups for different learning rates:
``qm.groups(lr, scale_lr, bias_lr)``.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from pathlib import Path

import onnx

from qvision.data import Preprocess
from qvision.errors import QVisionError
from qvision.fileio import atomic_path, check_output_path
from qvision.model.torch_graph import import_torch, torch_device
from qvision.quant.algorithms.context import Context
from qvision.quant.algorithms.qat import FakeQuant
from qvision.quant.config import QuantConfig


def prepare(
    module,
    example_input,
    calib: str | Path,
    *,
    preprocess: str | dict | Preprocess,
    target: str = "auto",
    weights: str = "int8",
    acts: int = 8,
    algos: str = "default",
    device: str | None = None,
    threads: int | None = None,
):
    """``module`` (eval mode, BatchNorm folded on export) as a trainable INT8 model."""
    torch = import_torch()
    from qvision.data.preprocess import parse_preprocess
    from qvision.model.load import normalize_model
    from qvision.quant import pipeline

    dev = torch_device(torch, device, "qat")
    pre = parse_preprocess(preprocess)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "module.onnx"
        # the exporter's deprecation notes and progress are not the user's concern here
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                (example_input,),
                str(path),
                input_names=["input"],
                dynamic_axes={"input": {0: "N"}},
                dynamo=False,
                opset_version=17,
            )
        proto = normalize_model(onnx.load(str(path)), "<module>")
        config = QuantConfig(target=target, weights=weights, acts=acts, algos=algos)
        planned = pipeline.make_plan(path, calib, pre, config, threads=threads, proto=proto)
    ctx = Context(
        planned.prepared, planned.plan, planned.target, planned.dataset, pre, planned.input_name
    )
    return _module(torch)(FakeQuant(ctx, acts=True, device=dev), ctx, planned)


def export(qmodule, output: str | Path) -> Path:
    """Write the trained model (QDQ ONNX) to ``output``: the learned integers, steps and
    biases go into the plan, and the writer emits it."""
    from qvision.quant import pipeline

    if not hasattr(qmodule, "fake_quant"):
        raise QVisionError("export takes the module qvision.qat.prepare returned")
    check_output_path(output, [])
    qmodule.fake_quant.write_back(qmodule.context)
    data = pipeline.write_model(qmodule.planned)
    with atomic_path(output) as tmp:
        tmp.write_bytes(data)
    return Path(output)


def _module(torch):
    class QatModule(torch.nn.Module):
        """The plan's INT8 model with its learnable tensors registered as parameters."""

        def __init__(self, fake_quant: FakeQuant, context: Context, planned):
            super().__init__()
            self.fake_quant, self.context, self.planned = fake_quant, context, planned
            for i, w in enumerate(fake_quant.weights):
                w.u = self._register(f"weight{i}", w.u)
                w.log = self._register(f"weight_step{i}", w.log)
            for i, a in enumerate(fake_quant.acts):
                a.log = self._register(f"act_step{i}", a.log)
            for i, b in enumerate(fake_quant.biases):
                b.value = self._register(f"bias{i}", b.value)

        def _register(self, name: str, tensor):
            p = torch.nn.Parameter(tensor.detach().clone())
            self.register_parameter(name, p)
            return p

        def forward(self, x):
            # eval mode: ONNX Runtime's integer arithmetic, i.e. what export will write;
            # training: the float simulation (half the time, same gradients)
            outs = self.fake_quant.forward(x, exact=not self.training)
            return outs[0] if len(outs) == 1 else tuple(outs)

        def groups(self, lr: float, scale_lr: float, bias_lr: float) -> list[dict]:
            return self.fake_quant.groups(lr, scale_lr, bias_lr)

    return QatModule
