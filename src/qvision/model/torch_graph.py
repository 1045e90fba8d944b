"""Run an ONNX graph in PyTorch, differentiably: the float model as it is, and a QDQ model
with straight-through rounding in QuantizeLinear, which is the INT8 model's arithmetic
with gradients (for attacks crafted through the quantized model). Covers the ops of the
CNNs qvision quantizes; anything else is a clear error naming the op. Block reconstruction
(``algorithms/brecq``) runs parts of it with learned weight rounding."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from qvision.errors import MissingExtraError, QVisionError
from qvision.model import torch_int
from qvision.qmath import int_limits


def import_torch():
    try:
        import torch
    except ImportError:
        raise MissingExtraError(
            "torch", "torch", "attacks and block reconstruction need gradients"
        ) from None
    return torch


def torch_device(torch, name: str | None, who: str) -> str:
    """Where ``who`` runs: 'auto' (or None) is the first CUDA GPU when PyTorch sees one (tens
    of times faster), else the CPU; a GPU asked for and not there is a clear error."""
    name = str(name or "auto").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise QVisionError(f"{who}.device={name}: PyTorch sees no CUDA GPU")
    if name != "cpu" and not name.startswith("cuda"):
        raise QVisionError(f"{who}.device={name}: use auto, cpu or cuda")
    return name


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class OnnxTorch:
    """``model(x)`` -> the first graph output, as a torch tensor with gradients."""

    def __init__(self, model: onnx.ModelProto):
        torch = import_torch()
        self.torch = torch
        arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        # 4-bit tensors (no torch type) are carried as int16 values; their own limits
        # bound QuantizeLinear, as ONNX Runtime saturates to the 4-bit range
        four = ("int4", "uint4")
        self.limits = {
            k: int_limits(a.dtype)
            for k, a in arrays.items()
            if a.dtype.kind in "iu" or a.dtype.name in four
        }
        self.consts = {
            k: torch.from_numpy(np.array(a.astype(np.int16) if a.dtype.name in four else a))
            for k, a in arrays.items()
        }
        self.nodes = list(model.graph.node)
        known = set(self.consts)
        self.input = next(i.name for i in model.graph.input if i.name not in known)
        self.output = model.graph.output[0].name
        unknown = sorted({n.op_type for n in self.nodes if not hasattr(self, f"op_{n.op_type}")})
        if unknown:
            raise QVisionError(f"no PyTorch translation for {', '.join(unknown)}")
        # False: QuantizeLinear passes values through unrounded and unclamped, so the QDQ
        # graph computes its float model (the targets of block reconstruction)
        self.quantize = True
        # QDrop (Wei et al. 2022): while fitting, each activation element skips its
        # quantization with this probability, which keeps block fits from overfitting
        self.drop = 0.0
        # fused Conv/Add/GlobalAveragePool units, which ``run(..., exact=True)`` computes in
        # ONNX Runtime's integer arithmetic (torch_int)
        self.units = torch_int.find_units(model)
        self.producer = {o: n for n in self.nodes for o in n.output}

    def to(self, device) -> OnnxTorch:
        """Move the constants (weights, scales, zero points) to ``device``."""
        self.consts = {k: v.to(device) for k, v in self.consts.items()}
        return self

    def __call__(self, x):
        return self.run(self.nodes, {**self.consts, self.input: x})[self.output]

    def run(self, nodes, env: dict, exact: bool = False) -> dict:
        """Run ``nodes`` (in order) over ``env`` (tensor name -> value); returns ``env``.
        ``exact``: fused units give ONNX Runtime's integer results; gradients still flow
        through the float path (straight-through)."""
        for node in nodes:
            args = [env[i] if i else None for i in node.input]
            out = getattr(self, f"op_{node.op_type}")(node, _attrs(node), *args)
            if exact and node.output[0] in self.units:
                unit = self.units[node.output[0]]
                got = torch_int.exact(self, unit, env, _attrs(unit.core))
                out = out if got is None else out + (got - out).detach()
            outs = out if isinstance(out, tuple) else (out,)
            for name, value in zip(node.output, outs, strict=False):
                env[name] = value
        return env

    # -- ops ---------------------------------------------------------------------------
    def _f(self, t):
        return t.float() if not t.is_floating_point() else t

    def op_Conv(self, node, a, x, w, b=None):
        F = self.torch.nn.functional
        pads = a.get("pads", [0, 0, 0, 0])
        if pads[0] != pads[2] or pads[1] != pads[3]:
            x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
            pads = [0, 0]
        return F.conv2d(
            x,
            self._f(w),
            None if b is None else self._f(b),
            stride=tuple(a.get("strides", [1, 1])),
            padding=(pads[0], pads[1]),
            dilation=tuple(a.get("dilations", [1, 1])),
            groups=a.get("group", 1),
        )

    def op_Gemm(self, node, a, x, w, b=None):
        if a.get("transA", 0):
            x = x.t()
        w = self._f(w)
        y = a.get("alpha", 1.0) * (x @ (w.t() if a.get("transB", 0) else w))
        return y if b is None else y + a.get("beta", 1.0) * self._f(b)

    def op_MatMul(self, node, a, x, w):
        return self.torch.matmul(x, self._f(w))

    def op_Relu(self, node, a, x):
        return self.torch.relu(x)

    def op_Clip(self, node, a, x, lo=None, hi=None):
        lo = a.get("min") if lo is None else float(lo)
        hi = a.get("max") if hi is None else float(hi)
        return self.torch.clamp(x, lo, hi)

    def op_Sigmoid(self, node, a, x):
        return self.torch.sigmoid(x)

    def op_HardSigmoid(self, node, a, x):
        return self.torch.clamp(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0, 1)

    def op_HardSwish(self, node, a, x):
        return x * self.torch.clamp(x / 6 + 0.5, 0, 1)

    def op_Add(self, node, a, x, y):
        return x + self._f(y)

    def op_Sub(self, node, a, x, y):
        return x - self._f(y)

    def op_Mul(self, node, a, x, y):
        return x * self._f(y)

    def op_Div(self, node, a, x, y):
        return x / self._f(y)

    def op_GlobalAveragePool(self, node, a, x):
        return x.mean(dim=(2, 3), keepdim=True)

    def _pool(self, a, x, fn, fill: float = 0.0, **extra):
        pads = a.get("pads", [0, 0, 0, 0])
        k = tuple(a["kernel_shape"])
        if pads[0] != pads[2] or pads[1] != pads[3]:
            x = self.torch.nn.functional.pad(x, (pads[1], pads[3], pads[0], pads[2]), value=fill)
            pads = [0, 0]
        return fn(
            x,
            k,
            stride=tuple(a.get("strides", [1] * len(k))),
            padding=(pads[0], pads[1]),
            ceil_mode=bool(a.get("ceil_mode", 0)),
            **extra,
        )

    def op_MaxPool(self, node, a, x):
        F = self.torch.nn.functional
        return self._pool(a, x, F.max_pool2d, fill=float("-inf"))

    def op_AveragePool(self, node, a, x):
        F = self.torch.nn.functional
        return self._pool(a, x, F.avg_pool2d, count_include_pad=bool(a.get("count_include_pad", 0)))

    def op_Concat(self, node, a, *xs):
        return self.torch.cat([self._f(x) for x in xs], dim=a["axis"])

    def op_ReduceMean(self, node, a, x, axes=None):
        axes = a.get("axes") if axes is None else [int(v) for v in axes.tolist()]
        return x.mean(dim=tuple(axes), keepdim=bool(a.get("keepdims", 1)))

    def op_Flatten(self, node, a, x):
        return x.flatten(a.get("axis", 1))

    def op_Reshape(self, node, a, x, shape):
        dims = [int(v) for v in shape.tolist()]
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
        return x.reshape(dims)

    def op_Transpose(self, node, a, x):  # sequence heads: [N, C, T] -> [N, T, C]
        return x.permute(*a.get("perm", range(x.ndim - 1, -1, -1)))

    def op_Softmax(self, node, a, x):
        return self.torch.softmax(x, dim=a.get("axis", -1))

    def op_Identity(self, node, a, x):
        return x

    def op_QuantizeLinear(self, node, a, x, scale, zp=None):
        torch = self.torch
        axis = a.get("axis", 1)
        scale = self._shape(scale.float(), x, axis)
        zpf = self._shape(zp.float(), x, axis) if zp is not None else torch.zeros(())
        if zp is None:
            lo, hi = 0, 255
        elif node.input[2] in self.limits:
            lo, hi = self.limits[node.input[2]]
        else:
            lo, hi = torch.iinfo(zp.dtype).min, torch.iinfo(zp.dtype).max
        v = x / scale
        if not self.quantize:
            return v + zpf
        q = torch.clamp(v + (torch.round(v) - v).detach() + zpf, lo, hi)  # STE
        if self.drop:
            return torch.where(torch.rand_like(v) < self.drop, v + zpf, q)
        return q

    def op_DequantizeLinear(self, node, a, q, scale, zp=None):
        axis = a.get("axis", 1)
        q = q.float()
        scale = self._shape(scale.float(), q, axis)
        zpf = self._shape(zp.float(), q, axis) if zp is not None else 0.0
        return (q - zpf) * scale

    def _shape(self, v, x, axis):
        """Per-axis parameters broadcast along ``axis``; scalars as they are."""
        if v.ndim == 0 or v.numel() == 1:
            return v.reshape(())
        shape = [1] * x.ndim
        shape[axis] = -1
        return v.reshape(shape)
