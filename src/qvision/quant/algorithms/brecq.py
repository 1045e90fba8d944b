"""Block reconstruction (Li et al. 2021, "BRECQ: Pushing the Limit of Post-Training
Quantization by Block Reconstruction").

AdaRound's learned rounding (soft rounding, annealed regularizer), optimized for a whole
block of layers at once: the block's quantized output — its input taken from the quantized
model before it (already reconstructed), activations quantized as deployed — is fitted to
the float model's output of that block. Layer-wise AdaRound only sees one layer's own
rounding; in a block, the layers of an inverted residual can compensate each other, which
4-bit weights need. As in QDrop (Wei et al. 2022), some elements of each fitted input
(a quarter) come from the float model, so a block does not learn to undo, on the calibration
images only, the error of the blocks before it.

Blocks come from the QDQ graph the writer emits, run in PyTorch (``torch_graph``): cut
wherever a single tensor is live (between residual blocks, between the layers of a chain),
then merge chain links until a block holds ``MIN_LAYERS`` weighted layers (expand,
depthwise, project). The learned choices go into the plan (``weight_rounding``) exactly as
AdaRound's do, so the writer emits them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from pydantic import Field

from qvision.data import iter_batches
from qvision.data.preprocess import concat_padded
from qvision.errors import QVisionError
from qvision.model import ops
from qvision.model.graph import GraphView
from qvision.model.ops import WEIGHTED_KINDS
from qvision.model.torch_graph import OnnxTorch, import_torch, torch_device
from qvision.quant.algorithms import base
from qvision.quant.algorithms import soft_rounding as sr
from qvision.quant.algorithms.base import Change
from qvision.quant.algorithms.context import Context
from qvision.quant.constraints import clip_caps, fit_under, scale_groups
from qvision.quant.plan import QuantSpec, pack_bits
from qvision.quant.sim import Simulator
from qvision.quant.writer import QDQ_OPS

MIN_LAYERS = 3
ITERS = 300
BATCH = 16
# Train on random crops of at most CROP×CROP pixels of a block's input: early blocks see
# 112×112 maps, and a crop's float target is computed on the same crop (same zero
# borders), so the fit stays exact while an iteration costs ~10× less.
CROP = 32
# Adam moves each rounding variable by at most ~LR per step; h(v) only reaches 0 or 1 at
# |v| >= 2.4, so 1e-2 over 300 steps left 15-60 % of MobileNetV2's roundings undecided
# and the hard rounding lost most of the fit
LR = 5e-2
REG = 0.01
REG_FLOOR = 10_000
CHUNK = 32  # images per no-grad pass
POOLING = ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean")
BIAS_LR = 1e-3
SCALE_LR = 1e-3
# learn each channel's dequantization scale with its rounding: EfficientNet-Lite0 W4A8
# +1.0 top-1 (one seed; SQNR +0.1 dB on both zoo models)
SCALE = True
# learn activation step sizes with the block (LSQ, as BRECQ and QDrop do): off, since the
# W4A8 zoo models came out the same (3 seeds: MobileNetV2 80.22 %, EfficientNet-Lite0 -0.15)
ACT = False
ACT_LR = 1e-3
# Where the hard rounding of a fit is worse than the starting rounding, the least decided
# roundings are tried the other way one at a time (a flip kept when the block's error
# drops): a few 4-bit depthwise roundings left between 0 and 1 made MobileNetV2's stem
# block 4x worse than nearest rounding once rounded; 20 flips brought it to 0.83x
REPAIR = 256
REPAIR_PASSES = 3
REPAIR_IMAGES = 64  # judged on this many images (windows of them on large maps)
# QDrop's input mixing: a share of the elements of a block's fitted input come from the
# float model. With the float model's block output as target (asym), the block otherwise learns to
# undo the error of the blocks before it on the 100 calibration images, which does not carry
# to other images: MobileNetV2's last block was 13.8 dB SQNR on them, 8.0 dB on eval images.
# A quarter rather than QDrop's half: W4A8, 5 seeds, EfficientNet-Lite0 85.00 % vs 84.65 %
# (+0.14 dB); MobileNetV2 the same in 3 seeds (80.52 %); 0.75 lost on both
MIX = 0.25
# two extra views of each calibration photo (``views``): random crops of the photo itself,
# through the model's own preprocessing. W4A8, 3 seeds: SQNR +0.34 / +0.23 dB and agreement
# +0.8 / +0.3 points on MobileNetV2 / EfficientNet-Lite0, top-1 +0.30 / -0.22 (inside the
# seed spread). Crops of the preprocessed tensor upsampled back (blurred) had cost top-1
VIEWS = 2
# by default only while the inputs stay within this many: a fit from few photos is what
# views help, and every input's block activations are held in memory (x3 with two views)
VIEW_INPUTS = 300
VIEW_SIDE = (0.57, 1.0)


# ``blend``: extra inputs, each photo mixed with another (off by default: every input's block
# activations are held in memory). H200, 4 seeds: 4 blends (700 inputs) +0.31 dB SQNR on
# EfficientNet-Lite0 (all seeds), +0.08 dB on MobileNetV2 (3 seeds), top-1 within ±0.1;
# 1 or 2 blends in place of views (300 inputs) gained nothing
class Options(base.Options):
    iters: int = Field(ITERS, ge=0)
    batch: int = Field(BATCH, ge=1)
    lr: float = LR
    reg: float = REG
    seed: int = 0
    flip: bool = False
    min_layers: int = Field(MIN_LAYERS, ge=1)
    crop: int = CROP
    bias: bool = True
    asym: bool = True
    drop: float = Field(0.0, ge=0, le=1)  # a probability
    views: int | None = Field(None, ge=0)  # None: VIEWS, capped by VIEW_INPUTS
    device: str | None = None  # auto, cpu, cuda
    scale: bool = SCALE
    repair: int = REPAIR
    mix: float = Field(MIX, ge=0, le=1)  # a probability
    act: bool = ACT
    blend: int = Field(0, ge=0)  # extra inputs per photo


class _Soft:
    """One weight's learnable rounding: S · (clamp(floor(W/S) + h(V) + Z) − Z)."""

    def __init__(
        self, torch, name: str, w: np.ndarray, spec: QuantSpec, start: np.ndarray, output: str
    ):
        scale, zp = spec.arrays()
        shape = [1] * w.ndim
        if spec.axis is not None:
            shape[spec.axis] = -1
        self.torch, self.name, self.output, self.fmt = torch, name, output, spec.format
        self.w = torch.from_numpy(np.array(w, np.float32))
        self.s = torch.from_numpy(scale.astype(np.float32).reshape(shape))
        self.z = torch.from_numpy(zp.astype(np.float32).reshape(shape))
        ratio = self.w / self.s
        self.floor = torch.floor(ratio)
        rest = (ratio - self.floor).clamp(0, 1)
        # h(v) == rest at the start: the soft weight begins as the float weight
        self.v = sr.start_logits(torch, rest)
        self.v.requires_grad_(True)
        self.start = self.s * (torch.from_numpy(start.astype(np.float32)) - self.z)
        # log of a per-channel factor on the dequantization scale, learned with ``scale``
        self.log_scale = torch.zeros(self.s.shape, requires_grad=True)

    def to(self, device) -> None:
        for k in ("w", "s", "z", "floor", "start"):
            setattr(self, k, getattr(self, k).to(device))
        self.v = self.v.detach().to(device).requires_grad_(True)
        self.log_scale = self.log_scale.detach().to(device).requires_grad_(True)

    def h(self):
        return sr.rectified(self.torch, self.v)

    def undecided(self) -> int:
        return sr.undecided(self.h())

    def up(self):
        return (self.h() >= 0.5).float()

    def value(self, mode: str):
        if mode == "float":
            return self.w
        if mode == "start":  # the plan's rounding before (nearest, or AdaRound's)
            return self.start
        r = self.h() if mode == "soft" else self.up()
        q = self.torch.clamp(self.floor + r + self.z, self.fmt.qmin, self.fmt.qmax)
        return self.scale() * (q - self.z)

    def scale(self):
        return self.s * self.torch.exp(self.log_scale)

    def reg(self, beta: float):
        return sr.regularizer(self.h(), beta)


@dataclass
class _Bias:
    """A quantized layer's bias, learned in float beside the rounding (its int32 grid is
    fine enough): the rounding can only move each weight by one step, a bias moves the
    channel's mean, which 4-bit weights shift."""

    node: str
    output: str  # the bias tensor the layer reads in the QDQ graph
    value: object  # torch tensor with gradients
    float: object  # the float model's bias: the targets come from the float model, not the plan


@dataclass
class _ActScale:
    """An activation's step size, learned as in LSQ (Esser et al. 2020) through the
    straight-through rounding of its QuantizeLinear: a log factor on the calibrated scale."""

    tensor: str  # the activation in the float model (its plan entry)
    name: str  # the scale initializer its Q and DQ read in the QDQ graph
    init: object  # torch tensor: the calibrated scale
    clip: float  # a folded Clip's max: the grid's top may not pass it (ORT fuses the Clip)
    top: int  # grid steps above the zero point
    log: object = None  # torch tensor with gradients, while learned

    def value(self):
        return (self.init * self.log.exp()).clamp(max=self.clip / self.top)


@dataclass
class Block:
    nodes: list = field(default_factory=list)
    input: str = ""
    output: str = ""
    softs: list[_Soft] = field(default_factory=list)
    biases: list[_Bias] = field(default_factory=list)
    acts: list[_ActScale] = field(default_factory=list)


def _blocks(
    nodes, graph_input: str, graph_output: str, soft_of: dict, bias_of: dict, min_layers: int
):
    """Split the non-constant nodes (in order) into single-input, single-output blocks."""
    last = {}
    for i, n in enumerate(nodes):
        for t in n.input:
            if t:
                last[t] = i
    live, cuts = {graph_input}, set()
    for i, n in enumerate(nodes):
        live |= {o for o in n.output if o in last}
        live = {t for t in live if last.get(t, -1) > i}
        # cut where a tensor is about to be quantized (after a Relu folded into its Conv,
        # not between them), so a block's output is compared unquantized and the next
        # block starts with the Q/DQ of its input
        quantized_next = i + 1 < len(nodes) and nodes[i + 1].op_type in QDQ_OPS
        if len(live) == 1 and n.op_type not in QDQ_OPS and n.output[0] in live and quantized_next:
            cuts.add(i)
    blocks, cur = [], Block(input=graph_input)
    for i, n in enumerate(nodes):
        cur.nodes.append(n)
        cur.softs += [soft_of[t] for t in n.input if t in soft_of]
        cur.biases += [bias_of[n.name]] if n.name in bias_of else []
        if i in cuts and (len(cur.softs) >= min_layers or _pooled_next(nodes, i, cur)):
            cur.output = n.output[0]
            blocks.append(cur)
            cur = Block(input=cur.output)
    if cur.nodes:
        cur.output = graph_output
        # a tail without weights (pooling, softmax) joins the last block
        if blocks and not cur.softs:
            blocks[-1].nodes += cur.nodes
            blocks[-1].biases += cur.biases
            blocks[-1].output = graph_output
        else:
            blocks.append(cur)
    return blocks


def _pooled_next(nodes, i: int, block: Block) -> bool:
    """A block with weights also ends before global pooling: fitting the pooled logits alone
    would ask 100 images' class scores to pin down a 1×1 conv's 400k roundings."""
    reader = next((m for m in nodes[i + 1 :] if m.op_type not in QDQ_OPS), None)
    return reader is not None and reader.op_type in POOLING and bool(block.softs)


def split(ctx: Context, min_layers: int = MIN_LAYERS, who: str = "brecq"):
    """The QDQ model of ``ctx.plan`` in PyTorch and its blocks."""
    torch = import_torch()
    plan = ctx.plan
    try:
        graph = OnnxTorch(Simulator(ctx.model, ctx.input_name).qdq(plan))
    except QVisionError as exc:
        hint = "; use adaround for this model" if who == "brecq" else ""
        raise QVisionError(f"{who}: {exc.problem}{hint}") from None
    view = GraphView(ctx.model)
    by_name = {n.name: n for n in graph.nodes}
    soft_of: dict[str, _Soft] = {}
    bias_of: dict[str, tuple] = {}  # layer -> (its bias tensor in the QDQ graph, float bias)
    for node in ctx.model.graph.node:
        d = plan.nodes.get(node.name)
        if not d or d.action != "quantize" or d.kind not in WEIGHTED_KINDS:
            continue
        facts = ops.layer(node)
        wname = node.input[facts.weight]
        if wname not in plan.weights or node.name not in by_name:
            continue
        out = by_name[node.name].input[facts.weight]
        w = view.weight(wname)
        soft_of[out] = _Soft(
            torch, wname, w, plan.weights[wname], plan.quantized_weight(wname, w), out
        )
        written = facts.bias_of(by_name[node.name])  # the bias the QDQ graph reads
        if written is not None:
            original = view.weight(facts.bias_of(node)) if facts.bias_of(node) else None
            if original is None:
                original = np.zeros(w.shape[facts.out_axis], np.float32)
            bias_of[node.name] = (written, original)
    # Nodes that read only constants (weight, bias and scale DQs) are evaluated once.
    consts = graph.consts
    rest = []
    with torch.no_grad():
        for n in graph.nodes:
            if all((not t) or t in consts for t in n.input):
                graph.run([n], consts)
            else:
                rest.append(n)
    biases = {
        node: _Bias(
            node,
            t,
            consts[t].detach().float().clone().requires_grad_(True),
            torch.from_numpy(np.array(original, np.float32)),
        )
        for node, (t, original) in bias_of.items()
        if t in consts
    }
    blocks = _blocks(rest, graph.input, graph.output, soft_of, biases, min_layers)
    tied = set(scale_groups(ctx.model, plan.nodes).parent)  # MaxPool, Concat: not learned
    caps = clip_caps(ctx.model, plan.nodes, view)
    for block in blocks:
        for n in block.nodes:
            t = n.input[0]
            if n.op_type == "QuantizeLinear" and t in plan.activations and t not in tied:
                spec = plan.activations[t]
                top = spec.format.qmax - spec.zero_point[0]
                if top > 0:
                    init = consts[n.input[1]].detach().float().clone()
                    block.acts.append(_ActScale(t, n.input[1], init, caps.get(t, np.inf), top))
    return graph, blocks


def apply(ctx: Context, options: Options) -> Change:
    torch = import_torch()
    opts = {**options.model_dump(), "device": torch_device(torch, options.device, "brecq")}
    torch.manual_seed(opts["seed"])
    plan = ctx.plan
    graph, blocks = split(ctx, opts["min_layers"])
    dev = opts["device"]
    graph.to(dev)
    for block in blocks:
        for s in block.softs:
            s.to(dev)
        for b in block.biases:
            b.value = b.value.detach().to(dev).requires_grad_(True)
            b.float = b.float.to(dev)
        for a in block.acts if opts["act"] else []:
            a.init = a.init.to(dev)
            a.log = torch.zeros_like(a.init, requires_grad=True)

    gen = torch.Generator().manual_seed(opts["seed"])
    # the repair's windows come from their own stream: whether a block needs repair does
    # not change the crops the next blocks are fitted on
    probe_gen = torch.Generator().manual_seed(opts["seed"] + 1)
    xs = [b.inputs for b in iter_batches(ctx.dataset, ctx.preprocess, batch_size=8)]
    if not xs:
        raise QVisionError("brecq needs calibration images")
    views = opts["views"]
    if views is None:
        views = min(VIEWS, max(0, VIEW_INPUTS // sum(len(b) for b in xs) - 1))
    photo_batches = len(xs)
    for j in range(views):
        view = crop_view(opts["seed"], j)
        xs += [b.inputs for b in iter_batches(ctx.dataset, ctx.preprocess, 8, transform=view)]
    # text lines differ in width from batch to batch: one tensor pads them to the widest
    pad = ctx.preprocess.pad_value
    if opts["blend"]:
        first = concat_padded(xs[:photo_batches], pad)
        xs += [blend(first, opts["seed"], j) for j in range(opts["blend"])]
    x = torch.from_numpy(concat_padded(xs, pad).astype(np.float32)).to(dev)
    if opts["flip"]:
        x = torch.cat([x, x.flip(-1)])
    xq, xf = x, x

    run = runner(graph)

    kept, ratios, undecided, weights, flips = 0, [], 0.0, 0, 0
    for done, block in enumerate(blocks):
        ctx.step("brecq", done, len(blocks))
        with torch.no_grad():
            # asym (BRECQ's choice): the float model's own block output, so each block also
            # undoes the error it receives; otherwise the float block on the quantized input
            # (its own error only), which let errors compound: MobileNetV2 W4A8 66.3 % vs 78.4 %
            source = xf if opts["asym"] else xq
            target = run(block, source, "float")
            out = run(block, xq, "start")
        if block.softs:
            before = float(loss_of(out, target))
            # fitted relative to the starting rounding's error, so the regularizer weighs the
            # same in every block and model (EfficientNet-Lite0's errors are ~100x MobileNetV2's;
            # in absolute terms its roundings never settled: 20-40 % undecided at the end)
            _fit(torch, block, xq, source, target, opts, gen, run, max(before, 1e-12))
            undecided += sum(s.undecided() for s in block.softs)
            weights += sum(s.v.numel() for s in block.softs)
            with torch.no_grad():
                fitted = run(block, xq, "hard")
            learned = float(loss_of(fitted, target))
            if learned > before and opts["repair"] > 0:
                probe = _probe(torch, block, xq, source, target, opts["crop"], probe_gen, run)
                flipped = repair(torch, block, *probe, run, opts["repair"])
                if flipped:
                    flips += flipped
                    with torch.no_grad():
                        fitted = run(block, xq, "hard")
                    learned = float(loss_of(fitted, target))
            if learned <= before:
                out = fitted
                for s in block.softs:
                    plan.weight_rounding[s.name] = pack_bits(s.up().cpu().numpy().astype(np.int64))
                    if opts["scale"]:
                        _keep_scale(plan, s)
                for b in block.biases if opts["bias"] else []:
                    plan.biases[b.node] = [float(v) for v in b.value.detach().cpu().numpy()]
                for a in block.acts if opts["act"] else []:
                    keep_act(plan, a)
                kept += 1
                ratios.append(learned / max(before, 1e-30))
        xq, xf = out, target
    ratio = float(np.mean(ratios)) if ratios else 1.0
    share = 100 * undecided / max(weights, 1)
    return Change(
        "blocks",
        kept,
        f"brecq: {len(blocks)} blocks, {kept} improved (block output error x"
        f"{ratio:.2f} of the rounding before, on average); "
        f"{share:.1f} % of roundings undecided when fitting "
        f"stopped, {flips} flipped by repair; {opts['iters']} iterations, batch "
        f"{opts['batch']}, {len(x)} images on {dev}",
        of=len(blocks),
        error="block output error relative to the rounding before (mean over improved blocks)",
        error_before=1.0,
        error_after=ratio,
        details={
            "undecided_percent": share,
            "repair_flips": flips,
            "images": len(x),
            "iterations": opts["iters"],
            "batch": opts["batch"],
            "device": dev,
        },
    )


def runner(graph: OnnxTorch):
    """``run(block, inputs, mode)``: the block's output with its weights as ``mode`` says
    (float, start, soft, hard), in chunks of CHUNK images."""
    torch = import_torch()

    def run(block: Block, inp, mode: str, drop: float = 0.0):
        graph.quantize, graph.drop = mode != "float", drop
        outs = []
        for i in range(0, len(inp), CHUNK):
            env = dict(graph.consts)
            env[block.input] = inp[i : i + CHUNK]
            env.update({s.output: s.value(mode) for s in block.softs})
            if mode in ("soft", "hard"):
                env.update({b.output: b.value for b in block.biases})
                env.update({a.name: a.value() for a in block.acts if a.log is not None})
            elif mode == "float":
                env.update({b.output: b.float for b in block.biases})
            outs.append(graph.run(block.nodes, env)[block.output])
        graph.quantize, graph.drop = True, 0.0
        return torch.cat(outs)

    return run


def loss_of(out, target):
    return ((out - target) ** 2).sum(dim=1).mean()


def _keep_scale(plan, soft: _Soft) -> None:
    """The learned dequantization scale becomes the weight's; the rounding stays on the
    grid it was learned on (``plan.weight_grid``)."""
    spec = plan.weights[soft.name]
    grid, zp = spec.arrays()
    new = soft.scale().detach().cpu().numpy().reshape(grid.shape).astype(np.float32)
    plan.weight_grid.setdefault(soft.name, [float(v) for v in np.ravel(grid)])
    plan.weights[soft.name] = QuantSpec.from_arrays(spec.format, new, zp, spec.axis)


def keep_act(plan, act: _ActScale) -> None:
    """The learned step size becomes the activation's (zero point unchanged). Its Q/DQ run
    in this block only, so nothing later reads the QDQ graph's copy."""
    spec = plan.activations[act.tensor]
    old, zp = spec.arrays()
    scale = np.float32(act.value().detach().cpu().numpy().ravel()[0])
    if np.isfinite(act.clip):
        scale = fit_under(scale, zp.ravel()[0], spec.format, act.clip)
    scale = np.asarray(scale, np.float32).reshape(old.shape)
    plan.activations[act.tensor] = QuantSpec.from_arrays(spec.format, scale, zp, spec.axis)


def crop_view(seed: int, j: int):
    """``iter_batches`` transform: a random crop of the photo itself (each side 0.57 to 1 of
    the photo's, so the model sees half to all of its usual view's width), mirrored at
    random; drawn from (seed, view, image index), so the decoding threads' order does not
    matter."""

    def crop(img, index: int):
        rng = np.random.default_rng([seed, j, index])
        w, h = img.size
        f = rng.uniform(*VIEW_SIDE)
        cw, ch = max(1, round(w * f)), max(1, round(h * f))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        v = img.crop((left, top, left + cw, top + ch))
        return v.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else v

    return crop


def blend(x: np.ndarray, seed: int, j: int) -> np.ndarray:
    """Each input mixed with another one (mixup of unlabelled photos, weights 0.3 to 0.7): more
    inputs for a fit from few photos, their targets from the float model as for any input.
    Partners follow a random cycle, so no input is mixed with itself (given two or more)."""
    rng = np.random.default_rng([seed, 7, j])
    order = rng.permutation(len(x))
    other = np.empty_like(order)
    other[order] = np.roll(order, 1)
    lam = rng.uniform(0.3, 0.7, (len(x),) + (1,) * (x.ndim - 1)).astype(np.float32)
    return lam * x + (1 - lam) * x[other]


def _sample(torch, block: Block, xq, source, target, count: int, c: int, gen, run):
    """``count`` random inputs of the block and their float targets; when its maps are larger
    than c×c, one random c×c window of them, with the float block run on the same window."""
    idx = torch.randint(0, len(xq), (min(count, len(xq)),), generator=gen)
    if not _larger(xq, c):
        return xq[idx], target[idx], source[idx]
    top = int(torch.randint(0, max(1, xq.shape[2] - c + 1), (1,), generator=gen))
    left = int(torch.randint(0, max(1, xq.shape[3] - c + 1), (1,), generator=gen))
    window = (..., slice(top, top + c), slice(left, left + c))
    with torch.no_grad():
        src = source[window][idx]
        return xq[window][idx], run(block, src, "float"), src


def _larger(x, c: int) -> bool:
    """Whether ``x`` holds maps larger than c×c."""
    return x.ndim == 4 and max(x.shape[2:]) > c


def _probe(torch, block: Block, xq, source, target, c: int, gen, run):
    """The images a repair is judged on: the first REPAIR_IMAGES, or as many 2c×2c windows
    (four places) when the block's maps are large."""
    if not _larger(xq, 2 * c):
        return xq[:REPAIR_IMAGES], target[:REPAIR_IMAGES]
    parts = [
        _sample(torch, block, xq, source, target, REPAIR_IMAGES // 4, 2 * c, gen, run)
        for _ in range(4)
    ]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def repair(torch, block: Block, x, want, run, limit: int) -> int:
    """Try the other rounding of the ``limit`` least decided weights (h strictly between 0
    and 1), one at a time, keeping a flip when the block's hard-rounded error on ``x`` drops;
    again while a pass flips any (flips interact; the third pass flipped none on
    MobileNetV2's stem block). Returns the flips kept."""
    with torch.no_grad():
        best = float(loss_of(run(block, x, "hard"), want))
        cands = _least_decided(torch, block.softs, limit)
        flips = 0
        for _ in range(REPAIR_PASSES):
            before = flips
            for s, i in cands:
                flat = s.v.data.view(-1)
                old = float(flat[i])
                flat[i] = -8.0 if old >= 0 else 8.0  # h(v) >= 0.5 exactly when v >= 0
                loss = float(loss_of(run(block, x, "hard"), want))
                if loss < best:
                    best, flips = loss, flips + 1
                else:
                    flat[i] = old
            if flips == before:
                break
    return flips


def _least_decided(torch, softs: list[_Soft], limit: int) -> list[tuple[_Soft, int]]:
    """(soft, flat index) of up to ``limit`` roundings strictly between 0 and 1, closest to
    0.5 first (ties in weight order), sorted as tensors: a block holds up to ~400k weights."""
    gap = torch.cat([(s.h().flatten() - 0.5).abs() for s in softs])
    order = torch.sort(gap, stable=True).indices
    order = order[gap[order] < 0.5][:limit].tolist()
    ends = np.cumsum([s.v.numel() for s in softs])
    out = []
    for j in order:
        k = int(np.searchsorted(ends, j, side="right"))
        out.append((softs[k], j - (int(ends[k - 1]) if k else 0)))
    return out


def mixed(torch, xq, xf, p: float, gen):
    """QDrop's block input (Wei et al. 2022): each element taken from the float model's input
    with probability ``p``, else from the quantized model's."""
    if p <= 0:
        return xq
    take = torch.rand(xq.shape, generator=gen) < p
    return torch.where(take.to(xq.device), xf, xq)


def _fit(torch, block: Block, xq, source, target, opts, gen, run, norm) -> None:
    """Fit the block's rounding (and biases) on ``xq``; targets are the float block on
    ``source``, recomputed per crop; the loss is divided by ``norm``."""
    groups = [{"params": [s.v for s in block.softs], "lr": opts["lr"]}]
    if opts["scale"]:
        groups.append({"params": [s.log_scale for s in block.softs], "lr": SCALE_LR})
    if opts["bias"] and block.biases:
        groups.append({"params": [b.value for b in block.biases], "lr": BIAS_LR})
    if opts["act"] and block.acts:
        groups.append({"params": [a.log for a in block.acts], "lr": ACT_LR})
    optim = torch.optim.Adam(groups)
    iters = opts["iters"]
    # the regularizer is a sum over weights against a loss near 1 (relative): below
    # REG_FLOOR weights it is weighed as if there were that many, or a small block's
    # roundings stay undecided (MobileNetV2's stem block: 15 % at the end)
    count = sum(s.v.numel() for s in block.softs)
    reg = opts["reg"] * max(1.0, REG_FLOOR / max(count, 1))
    for i in range(iters):
        x, want, xs = _sample(
            torch, block, xq, source, target, opts["batch"], opts["crop"], gen, run
        )
        x = mixed(torch, x, xs, opts["mix"], gen)
        out = run(block, x, "soft", opts["drop"])
        loss = loss_of(out, want) / norm
        b = sr.beta(i, iters)
        if b is not None:
            loss = loss + reg * sum(s.reg(b) for s in block.softs)
        optim.zero_grad()
        loss.backward()
        optim.step()
