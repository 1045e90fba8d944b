"""Quantization-aware training, end to end, from the PTQ plan.

The QDQ model the writer emits for the plan runs in PyTorch (``torch_graph``); every
quantized weight becomes a latent value in units of its grid step, started at PTQ's
integers (so training starts exactly at the PTQ model), quantized with straight-through
rounding on a learned per-channel step (LSQ, Esser et al. 2020); activation steps and
biases are learned beside them. The loss distils the FP32 model's outputs (soft targets on
class scores, scaled MSE otherwise) on the calibration images, random crops of them and
mixes of two (targets computed on the mix), so no labels are needed. A fifth of the photos
is held out: the state with the lowest loss on them, computed in ONNX Runtime's integer
arithmetic (``torch_int``: the exported model's own values), is kept, and none at all
when no state beats PTQ's (100 photos are few for millions of weights; training loss alone
overfits). What is learned goes back into the plan (integer weights as offsets from
nearest rounding, steps, biases), and the writer emits it like any plan: the exported
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
# Rates chosen on the held-out calibration photos' loss (MobileNetV2 W4A8 from its BRECQ
# plan, 150 steps): at 2e-3 / 1e-3 / 1e-4 that loss rose 60-100 % within 25 steps, even with
# the integers frozen; at these rates (with warm-up) it fell 7 % and then wandered
LR = 5e-4  # latent weights, in grid steps per Adam step
SCALE_LR = 1e-4  # log of each weight channel's and activation's step
BIAS_LR = 1e-5
TEMPERATURE = 1.0
CHUNK = 32  # inputs per no-grad pass
HOLDOUT = 5  # every 5th calibration photo (and its crops) is held out of training
CHECK = 25  # steps between checks on the held-out photos (the best state is kept)
MIX = 0.5  # share of training inputs mixed with another (mixup of unlabelled photos)


class Options(base.Options):
    steps: int = Field(STEPS, ge=0)
    batch: int = Field(BATCH, ge=1)
    lr: float = Field(LR, ge=0)  # 0: integers stay PTQ's (steps and biases still learn)
    scale_lr: float = Field(SCALE_LR, ge=0)  # 0: steps stay PTQ's
    bias_lr: float = Field(BIAS_LR, ge=0)  # 0: biases stay PTQ's
    acts: bool = True  # learn activation steps
    views: int = Field(VIEWS, ge=0)
    temperature: float = Field(TEMPERATURE, gt=0)
    mix: float = Field(MIX, ge=0, le=1)
    # add cross-entropy with the calibration folder's labels (class folders) to distillation
    labels: bool = False
    # train on ONNX Runtime's integer arithmetic (model/torch_int; about 2x the time) rather
    # than the float simulation; the held-out photos are always judged on it
    exact: bool = False
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
    xs, paths = [], []
    for j in range(-1, views):
        view = crop_view(seed, j) if j >= 0 else None
        for b in iter_batches(ctx.dataset, ctx.preprocess, 8, transform=view):
            xs.append(b.inputs)
            paths += [s.path for s in b.samples]
    if not xs:
        raise QVisionError("qat needs calibration images")
    return concat_padded(xs, ctx.preprocess.pad_value).astype(np.float32), paths


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
        with_bias = {b.node for b in self.biases}
        for node in ctx.model.graph.node:
            if node.name not in with_bias:
                continue
            x, wname = node.input[0], node.input[ops.layer(node).weight]
            if x in plan.activations and wname in weights:
                fixed = self.torch.tensor(float(plan.activations[x].arrays()[0]))
                out[node.name] = (weights[wname], acts.get(x), fixed.to(weights[wname].s0.device))
        return out

    def _bias_step(self, b):
        w, act, fixed = self.bias_grid[b.node]
        return (act.value() if act is not None else fixed) * w.scale().reshape(-1)

    def bias_value(self, b):
        """The bias as the integer model adds it (straight-through rounding to its grid)."""
        if b.node not in self.bias_grid:
            return b.value
        step = self._bias_step(b)
        v = b.value / step
        return (v + (v.round() - v).detach()) * step

    def forward(self, x, exact: bool = False) -> list:
        """Every output; ``exact``: fused units in ONNX Runtime's integer arithmetic (the
        exported model's values; gradients as without)."""
        env = dict(self.graph.consts)
        env[self.graph.input] = x
        env.update({w.output: w.value() for w in self.weights})
        env.update({b.output: self.bias_value(b) for b in self.biases})
        env.update({a.name: a.value() for a in self.acts})
        if exact:  # the integers and steps the exact units read, as trained
            dq = self.graph.producer
            for w in self.weights:
                env[dq[w.output].input[0]] = w.ints()
                env[dq[w.output].input[1]] = w.scale().reshape(-1)
            for b in self.biases:
                if b.node in self.bias_grid:
                    env[dq[b.output].input[0]] = (b.value / self._bias_step(b)).round()
        env = self.graph.run(self.nodes, env, exact)
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


class Teacher:
    """The FP32 (prepared) model in ONNX Runtime: targets for any batch, mixed ones too."""

    def __init__(self, ctx: Context):
        self.sess = make_session(ctx.model.SerializeToString(), ctx.threads)
        self.names = [o.name for o in ctx.model.graph.output]
        self.input = ctx.input_name

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        runs = [
            self.sess.run(self.names, {self.input: x[i : i + CHUNK]})
            for i in range(0, len(x), CHUNK)
        ]
        return [np.concatenate(part) for part in zip(*runs, strict=True)]


def _schedule(i: int, steps: int) -> float:
    """Linear warm-up over the first tenth, then cosine decay: Adam's first steps move every
    parameter by a full step at once, which cost the held-out loss on MobileNetV2."""
    warm = max(1, steps // 10)
    return min(1.0, i / warm) * 0.5 * (1 + math.cos(math.pi * (i - 1) / max(steps, 1)))


def _held_out(paths: list, every: int) -> np.ndarray:
    """True for the inputs of every ``every``-th photo (in file order) and its crops: the
    photos training never sees, to judge when it stops helping."""
    order = {p: i for i, p in enumerate(dict.fromkeys(paths))}
    if len(order) < every:
        return np.zeros(len(paths), bool)
    return np.array([order[p] % every == every - 1 for p in paths])


def apply(ctx: Context, options: Options) -> Change:
    torch = import_torch()
    opts = options.model_dump()
    dev = torch_device(torch, options.device, "qat")
    torch.manual_seed(opts["seed"])
    fq = FakeQuant(ctx, opts["acts"], dev)
    x_np, paths = _inputs(ctx, opts["views"], opts["seed"])
    labels = np.array(_labels(ctx, paths)) if opts["labels"] else None
    teacher = Teacher(ctx)
    held = _held_out(paths, HOLDOUT)
    train = np.flatnonzero(~held)
    val_x = torch.from_numpy(x_np[held]).to(dev)
    val_want = [torch.from_numpy(w).to(dev) for w in teacher(x_np[held])] if held.any() else []
    probs = (
        _probabilities(torch, torch.from_numpy(teacher(x_np[:2])[0])) if opts["labels"] else False
    )
    t = opts["temperature"]

    def loss_of(outs, want, y=None, lam=None):
        loss = sum(_distill(torch, o, w, t) for o, w in zip(outs, want, strict=True))
        if y is not None:  # the true class beside FP32's soft targets (mixed as the inputs)
            scores = outs[0].clamp_min(1e-8).log() if probs else outs[0]
            ce = torch.nn.functional.cross_entropy
            loss = loss + (lam * ce(scores, y[0], reduction="none")).mean()
            loss = loss + ((1 - lam) * ce(scores, y[1], reduction="none")).mean()
        return loss

    def validate() -> float | None:
        if not held.any():
            return None
        with torch.no_grad():
            total = 0.0
            for i in range(0, len(val_x), CHUNK):
                outs = fq.forward(val_x[i : i + CHUNK], exact=True)
                want = [w[i : i + CHUNK] for w in val_want]
                total += float(loss_of(outs, want)) * len(want[0])
        return total / len(val_x)

    rng = np.random.default_rng(opts["seed"])

    def batch():
        """Training inputs, each mixed with another with probability ``mix`` (weights 0.3 to
        0.7); targets from FP32 on the mixed images, so 100 photos give endless inputs."""
        n = min(opts["batch"], len(train))
        a, b = rng.choice(train, n), rng.choice(train, n)
        lam = np.where(rng.random(n) < opts["mix"], rng.uniform(0.3, 0.7, n), 1.0)
        lam = lam.astype(np.float32)
        xb = lam[:, None, None, None] * x_np[a] + (1 - lam[:, None, None, None]) * x_np[b]
        xb = xb.astype(np.float32)
        want = [torch.from_numpy(w).to(dev) for w in teacher(xb)]
        y = None
        if labels is not None:
            y = (torch.from_numpy(labels[a]).to(dev), torch.from_numpy(labels[b]).to(dev))
        return torch.from_numpy(xb).to(dev), want, y, torch.from_numpy(lam).to(dev)

    groups = fq.groups(opts["lr"], opts["scale_lr"], opts["bias_lr"])
    params = [p for g in groups for p in g["params"]]
    start = validate()
    best, best_at, kept_state = start, 0, None
    curve = [(0, start)]
    optim = torch.optim.Adam(groups)
    base_lrs = [g["lr"] for g in optim.param_groups]
    steps = opts["steps"]
    for i in range(1, steps + 1):
        ctx.step("qat", i - 1, steps)
        for g, lr in zip(optim.param_groups, base_lrs, strict=True):
            g["lr"] = lr * _schedule(i, steps)
        xb, want, y, lam = batch()
        loss = loss_of(fq.forward(xb, exact=opts["exact"]), want, y, lam)
        optim.zero_grad()
        loss.backward()
        optim.step()
        if i % CHECK == 0 or i == steps:
            now = validate()
            curve.append((i, now))
            if now is None or now < best:  # no held-out photos: the last state stands
                best, best_at = now, i
                kept_state = [p.detach().clone() for p in params]
    kept = kept_state is not None
    if kept:
        with torch.no_grad():
            for p, v in zip(params, kept_state, strict=True):
                p.copy_(v)
        fq.write_back(ctx)
    judged = "held-out photos' distillation loss"
    shown = "—" if start is None else f"{start:.4g} -> {best:.4g}"
    return Change(
        "weights",
        len(fq.weights) if kept else 0,
        f"qat: {steps} steps, batch {opts['batch']}, {len(train)} training inputs on {dev}; "
        f"{judged} {shown}"
        + (f" (kept step {best_at})" if kept else " (no step beat PTQ: its plan stays)"),
        of=len(fq.weights),
        error=f"{judged} (FP32 outputs as targets; every {HOLDOUT}th photo and its crops)",
        error_before=start,
        error_after=best,
        details={
            "steps": steps,
            "kept_step": best_at if kept else None,
            "inputs": len(train),
            "held_out": int(held.sum()),
            "held_out_loss": curve,  # (step, loss) at each check
            "device": dev,
            "kept": kept,
        },
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
