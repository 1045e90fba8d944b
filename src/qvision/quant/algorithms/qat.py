"""Quantization-aware training, end to end, from the PTQ plan.

The QDQ model the writer emits for the plan runs in PyTorch (``torch_graph``); every
quantized weight becomes a latent value in units of its grid step, started at PTQ's
integers (so training starts exactly at the PTQ model), quantized with straight-through
rounding on a learned per-channel step (LSQ, Esser et al. 2020); activation steps and
biases are learned beside them. The loss distils the FP32 model's outputs (soft targets on
class scores, scaled MSE otherwise) on the calibration images and random crops of them, so
no labels are needed. What is learned goes back into the plan (integer weights as offsets
from nearest rounding, steps, biases), and the writer emits it like any plan: the exported
model is the trained one, not a re-quantization of it.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from qvision.data import iter_batches
from qvision.data.preprocess import concat_padded
from qvision.errors import QVisionError
from qvision.model.torch_graph import import_torch, torch_device
from qvision.qmath import quantize
from qvision.quant.algorithms import base
from qvision.quant.algorithms.base import Change
from qvision.quant.algorithms.brecq import crop_view, keep_act, split
from qvision.quant.algorithms.context import Context
from qvision.quant.plan import QuantSpec, pack_offsets
from qvision.runtime.session import make_session

STEPS = 300
BATCH = 16
VIEWS = 4  # random crops per calibration photo, besides the photo itself
LR = 2e-3  # latent weights, in grid steps per Adam step
SCALE_LR = 1e-3  # log of each weight channel's and activation's step
BIAS_LR = 1e-4
TEMPERATURE = 1.0
CHUNK = 32  # inputs per no-grad pass


class Options(base.Options):
    steps: int = Field(STEPS, ge=0)
    batch: int = Field(BATCH, ge=1)
    lr: float = Field(LR, gt=0)
    scale_lr: float = Field(SCALE_LR, ge=0)  # 0: steps stay PTQ's
    bias_lr: float = Field(BIAS_LR, ge=0)  # 0: biases stay PTQ's
    acts: bool = True  # learn activation steps
    views: int = Field(VIEWS, ge=0)
    temperature: float = Field(TEMPERATURE, gt=0)
    # add cross-entropy with the calibration folder's labels (class folders) to distillation
    labels: bool = False
    seed: int = 0
    device: str | None = None  # auto, cpu, cuda


class _Weight:
    """One quantized weight: latent ``u`` in steps of the plan's grid ``s0`` and a learned
    log factor on the step; ``value()`` is what the QDQ graph's DequantizeLinear gives."""

    def __init__(self, torch, soft, dev):
        self.name, self.output, self.fmt = soft.name, soft.output, soft.fmt
        self.s0, self.z = soft.s.to(dev), soft.z.to(dev)
        start = (soft.start.to(dev) / self.s0).round()  # PTQ's integers minus the zero point
        self.u = start.clone().requires_grad_(True)
        self.log = torch.zeros_like(self.s0, requires_grad=True)
        self.torch = torch

    def scale(self):
        return self.s0 * self.log.exp()

    def ints(self):
        v = self.u * (-self.log).exp()
        q = v + (v.round() - v).detach() + self.z  # straight-through rounding
        return self.torch.clamp(q, self.fmt.qmin, self.fmt.qmax)

    def value(self):
        return self.scale() * (self.ints() - self.z)


def _probabilities(torch, want) -> bool:
    """Whether a model's class scores are probabilities (it ends in Softmax)."""
    ones = torch.ones(len(want), device=want.device)
    return bool((want >= 0).all()) and torch.allclose(want.sum(1), ones, atol=1e-3)


def _distill(torch, out, want, temperature: float):
    """Soft targets for class scores (probabilities are taken back to logits), scaled MSE
    for anything else."""
    if out.ndim == 2 and out.shape[1] > 1:
        if _probabilities(torch, want):
            out, want = out.clamp_min(1e-8).log(), want.clamp_min(1e-8).log()
        t = temperature
        p = torch.softmax(want / t, 1)
        kl = (p * (p.clamp_min(1e-12).log() - torch.log_softmax(out / t, 1))).sum(1)
        return t * t * kl.mean()
    return ((out - want) ** 2).mean() / want.var().clamp_min(1e-12)


def _class_scores(ctx: Context) -> bool:
    """Whether the model's first output is [N, classes] (what a label can be scored on)."""
    dims = ctx.model.graph.output[0].type.tensor_type.shape.dim
    return len(dims) == 2


def _labels(ctx: Context, paths: list) -> list[int]:
    """Each input's class from the calibration folder's class folders (calibration reads
    images only, so the labelled view of the same folder is opened here)."""
    from qvision.data.datasets import labelled_folder

    root = getattr(ctx.dataset, "root", None)
    why = "qat.labels needs a classifier and labelled calibration images (class folders)"
    if root is None or not _class_scores(ctx):
        raise QVisionError(why, root)
    try:
        by_path = {s.path: s.label for s in labelled_folder(root).samples}
    except QVisionError as exc:
        raise QVisionError(f"{why}: {exc.problem}", root) from None
    missing = [p for p in paths if p not in by_path]
    if missing:
        raise QVisionError(f"{why}: {missing[0]} is in no class folder", root)
    return [by_path[p] for p in paths]


def _inputs(ctx: Context, views: int, seed: int) -> tuple[np.ndarray, list]:
    """The photos, then ``views`` random crops of each; and each input's file."""
    xs, labels = [], []
    for j in range(-1, views):
        view = crop_view(seed, j) if j >= 0 else None
        for b in iter_batches(ctx.dataset, ctx.preprocess, 8, transform=view):
            xs.append(b.inputs)
            labels += [s.path for s in b.samples]
    if not xs:
        raise QVisionError("qat needs calibration images")
    return concat_padded(xs, ctx.preprocess.pad_value).astype(np.float32), labels


class FakeQuant:
    """The plan's QDQ model in PyTorch with its weights, steps and biases as parameters:
    ``forward(x)`` gives every model output; ``write_back(ctx)`` puts them into the plan."""

    def __init__(self, ctx: Context, acts: bool = True, device: str = "cpu"):
        torch = import_torch()
        self.torch = torch
        graph, blocks = split(ctx, min_layers=10**9, who="qat")
        self.graph = graph.to(device)
        self.nodes = [n for b in blocks for n in b.nodes]
        self.weights = [_Weight(torch, s, device) for b in blocks for s in b.softs]
        self.biases = [b for blk in blocks for b in blk.biases]
        for b in self.biases:
            b.value = b.value.detach().to(device).requires_grad_(True)
        self.acts = [a for blk in blocks for a in blk.acts] if acts else []
        for a in self.acts:
            a.init = a.init.to(device)
            a.log = torch.zeros_like(a.init, requires_grad=True)
        self.outputs = [o.name for o in ctx.model.graph.output]
        self.bias_grid = self._bias_grids(ctx)

    def _bias_grids(self, ctx: Context) -> dict[str, tuple]:
        """Layer -> (its weight, its input's learned step or None, the fixed step): the
        writer stores each bias as int32 on input step x weight step, so training does."""
        from qvision.model import ops

        weights = {w.name: w for w in self.weights}
        acts = {a.tensor: a for a in self.acts}
        plan, out = ctx.plan, {}
        for node in ctx.model.graph.node:
            if not any(b.node == node.name for b in self.biases):
                continue
            x, wname = node.input[0], node.input[ops.layer(node).weight]
            if x in plan.activations and wname in weights:
                fixed = self.torch.tensor(float(plan.activations[x].arrays()[0]))
                out[node.name] = (weights[wname], acts.get(x), fixed.to(weights[wname].s0.device))
        return out

    def bias_value(self, b):
        """The bias as the integer model adds it (straight-through rounding to its grid)."""
        if b.node not in self.bias_grid:
            return b.value
        w, act, fixed = self.bias_grid[b.node]
        step = (act.value() if act is not None else fixed) * w.scale().reshape(-1)
        v = b.value / step
        return (v + (v.round() - v).detach()) * step

    def forward(self, x) -> list:
        env = dict(self.graph.consts)
        env[self.graph.input] = x
        env.update({w.output: w.value() for w in self.weights})
        env.update({b.output: self.bias_value(b) for b in self.biases})
        env.update({a.name: a.value() for a in self.acts})
        env = self.graph.run(self.nodes, env)
        return [env[n] for n in self.outputs]

    def groups(self, lr: float, scale_lr: float, bias_lr: float) -> list[dict]:
        """Adam parameter groups; a zero rate leaves that kind as PTQ set it."""
        out = [{"params": [w.u for w in self.weights], "lr": lr}]
        if scale_lr:
            out.append({"params": [w.log for w in self.weights], "lr": scale_lr})
            if self.acts:
                out.append({"params": [a.log for a in self.acts], "lr": scale_lr})
        if bias_lr and self.biases:
            out.append({"params": [b.value for b in self.biases], "lr": bias_lr})
        return out

    def write_back(self, ctx: Context) -> None:
        _write_back(ctx, self.weights, self.biases, self.acts)


def teacher_outputs(ctx: Context, x: np.ndarray) -> list[np.ndarray]:
    """The FP32 (prepared) model's outputs on ``x``, CHUNK inputs at a time."""
    sess = make_session(ctx.model.SerializeToString(), ctx.threads)
    names = [o.name for o in ctx.model.graph.output]
    runs = [sess.run(names, {ctx.input_name: x[i : i + CHUNK]}) for i in range(0, len(x), CHUNK)]
    return [np.concatenate(part) for part in zip(*runs, strict=True)]


def apply(ctx: Context, options: Options) -> Change:
    torch = import_torch()
    opts = options.model_dump()
    dev = torch_device(torch, options.device, "qat")
    torch.manual_seed(opts["seed"])
    fq = FakeQuant(ctx, opts["acts"], dev)
    x_np, paths = _inputs(ctx, opts["views"], opts["seed"])
    y = torch.tensor(_labels(ctx, paths), device=dev) if opts["labels"] else None
    want = [torch.from_numpy(w).to(dev) for w in teacher_outputs(ctx, x_np)]
    x = torch.from_numpy(x_np).to(dev)
    probs = _probabilities(torch, want[0]) if y is not None else False

    def loss_on(idx):
        outs = fq.forward(x[idx])
        t = opts["temperature"]
        loss = sum(_distill(torch, o, w[idx], t) for o, w in zip(outs, want, strict=True))
        if y is not None:  # the true class beside FP32's soft targets
            scores = outs[0].clamp_min(1e-8).log() if probs else outs[0]
            loss = loss + torch.nn.functional.cross_entropy(scores, y[idx])
        return loss

    def full_loss() -> float:
        with torch.no_grad():
            total = 0.0
            for i in range(0, len(x), CHUNK):
                idx = torch.arange(i, min(i + CHUNK, len(x)), device=dev)
                total += float(loss_on(idx)) * len(idx)
        return total / len(x)

    before = full_loss()
    optim = torch.optim.Adam(fq.groups(opts["lr"], opts["scale_lr"], opts["bias_lr"]))
    base_lrs = [g["lr"] for g in optim.param_groups]
    gen = torch.Generator().manual_seed(opts["seed"])
    steps = opts["steps"]
    for i in range(steps):
        ctx.step("qat", i, steps)
        for g, lr in zip(optim.param_groups, base_lrs, strict=True):
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * i / max(steps, 1)))  # cosine decay
        idx = torch.randint(0, len(x), (min(opts["batch"], len(x)),), generator=gen).to(dev)
        loss = loss_on(idx)
        optim.zero_grad()
        loss.backward()
        optim.step()
    after = full_loss()
    kept = after < before
    if kept:
        fq.write_back(ctx)
    return Change(
        "weights",
        len(fq.weights) if kept else 0,
        f"qat: {steps} steps, batch {opts['batch']}, {len(x)} inputs on {dev}; distillation "
        f"loss {before:.4g} -> {after:.4g}" + ("" if kept else " (not kept: PTQ's plan stays)"),
        of=len(fq.weights),
        error="distillation loss on the training inputs (FP32 outputs as targets)",
        error_before=before,
        error_after=after,
        details={"steps": steps, "inputs": len(x), "device": dev, "kept": kept},
    )


def _write_back(ctx: Context, weights: list[_Weight], biases, acts) -> None:
    """Learned integers, steps and biases into the plan: the writer emits them as trained."""
    from qvision.model.graph import GraphView

    plan, view = ctx.plan, GraphView(ctx.model)
    with import_torch().no_grad():
        for w in weights:
            spec = plan.weights[w.name]
            _, zp = spec.arrays()
            scale = w.scale().cpu().numpy().astype(np.float32).reshape(np.shape(spec.arrays()[0]))
            ints = w.ints().cpu().numpy().astype(np.int64)
            new = QuantSpec.from_arrays(spec.format, scale, zp, spec.axis)
            nearest = quantize(view.weight(w.name), *new.arrays(), new.format, new.axis)
            plan.weights[w.name] = new
            plan.weight_offsets[w.name] = pack_offsets(ints - nearest.astype(np.int64))
            plan.weight_rounding.pop(w.name, None)
            plan.weight_grid.pop(w.name, None)
        for b in biases:
            plan.biases[b.node] = [float(v) for v in b.value.cpu().numpy()]
        for a in acts:
            keep_act(plan, a)
