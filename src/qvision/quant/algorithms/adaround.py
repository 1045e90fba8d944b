"""AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization").

For each quantized Conv/Gemm/MatMul, learn per weight whether to round down or up so the
layer's output on real inputs matches the float layer's, instead of rounding each weight
to nearest in isolation. Where a Relu or Clip follows, the error is measured after it, as in
the paper: a change the activation clips away costs nothing. Inputs are the quantized
model's (fake-quantized) inputs of each layer on the calibration images, so later layers see
what they will really get. Memory is bounded by sampling a fixed number of rows (patches)
per layer; time by an iteration cap. The learned choices go into the plan
(``weight_rounding``), so the writer emits them as they are.
"""

from __future__ import annotations

import numpy as np
import onnx
from pydantic import Field

from qvision.data.preprocess import concat_padded
from qvision.errors import MissingExtraError
from qvision.model import ops
from qvision.model.graph import GraphView, clip_bounds, node_attr
from qvision.model.torch_graph import torch_device
from qvision.qmath import fake_quantize
from qvision.quant.algorithms import base
from qvision.quant.algorithms import soft_rounding as sr
from qvision.quant.algorithms.base import Change
from qvision.quant.algorithms.context import Context
from qvision.quant.plan import pack_bits
from qvision.quant.sim import Simulator

# sampled rows (patches) per layer; a depthwise row holds every channel, so it takes a quarter.
# 2048 rows lost 1.3 top-1 against these on MobileNetV2 W4A8: a 1x1 layer's rounding (up to
# 410k weights) learned the rows it was fitted on (BENCHMARKS.md)
ROWS = 16384
# Steps, not rows per step, were what the fit lacked: per-layer error on held-out images
# x0.26 of nearest rounding at 1000 steps of lr 0.01, x0.21 at 2000 of lr 0.05 (x0.23 with
# 4x the rows per step instead); MobileNetV2 W4A8 +1.6..+2.7 top-1 (BENCHMARKS.md). 1500
# keeps MobileNetV2 under the 10 minutes on the slower of the 2-core machines seen
ITERS = 1500
BATCH = 256
REG = 0.01
LR = 5e-2
BUDGET_BYTES = 768 * 2**20


def import_torch():
    try:
        import torch
    except ImportError:
        raise MissingExtraError(
            "torch", "torch", "AdaRound optimizes rounding with PyTorch"
        ) from None
    return torch


class _Layer:
    def __init__(self, node: onnx.NodeProto, kind: str, w: np.ndarray, bias: np.ndarray | None):
        self.node, self.kind, self.w, self.bias = node, kind, w, bias
        self.ops = ops.layer(node)
        self.groups = self.ops.groups if kind == "conv" else 1
        self.depthwise = kind == "conv" and self.groups > 1 and w.shape[1] == 1
        self.xq: list[np.ndarray] = []
        self.act: tuple[float, float] | None = None  # bounds of a Relu/Clip that follows

    @property
    def supported(self) -> bool:
        return self.kind != "conv" or self.groups == 1 or self.depthwise

    def rows(self, rows: int) -> int:
        return rows // 4 if self.depthwise else rows

    def row_bytes(self) -> int:
        return int(np.prod(self.w.shape[1:])) * (self.w.shape[0] if self.depthwise else 1) * 4


def _patches(torch, layer: _Layer, x: np.ndarray) -> np.ndarray:
    """Rows the layer multiplies with its weight: im2col patches for Conv, rows for Gemm/MatMul."""
    if layer.kind != "conv":
        return x.reshape(-1, x.shape[-1])
    n = layer.node
    k = layer.w.shape[2:]
    pads = list(node_attr(n, "pads", [0] * 4))
    if pads[0] != pads[2] or pads[1] != pads[3]:  # asymmetric padding: pad explicitly first
        x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
        pads = [0, 0, 0, 0]
    cols = torch.nn.functional.unfold(
        torch.from_numpy(x),
        kernel_size=tuple(k),
        dilation=tuple(node_attr(n, "dilations", [1, 1])),
        padding=(pads[0], pads[1]),
        stride=tuple(node_attr(n, "strides", [1, 1])),
    )  # [N, C*kh*kw, L]
    cols = cols.permute(0, 2, 1).reshape(-1, cols.shape[1]).numpy()
    if layer.depthwise:
        c = layer.w.shape[0]
        cols = cols.reshape(-1, c, int(np.prod(k)))
    return cols


def _inputs(ctx: Context, blends: int, seed: int):
    """The calibration images, one at a time, then ``blends`` mixes of each with another."""
    from qvision.quant.algorithms.brecq import blend

    photos = []
    for x in ctx.images():
        photos.append(x)
        yield x
    if blends:
        x = concat_padded(photos, ctx.preprocess.pad_value)  # lines: padded to the widest
        for j in range(blends):
            for mixed in blend(x, seed, j):
                yield mixed[None]


def _capture(
    ctx: Context,
    layers: list[_Layer],
    per_image: int,
    rng: np.random.Generator,
    blends: int = 0,
    seed: int = 0,
) -> None:
    """Sample rows of each layer's quantized input (from the quantized model) over the calibration set."""
    torch = import_torch()
    names = sorted({layer.node.input[0] for layer in layers})
    specs = ctx.plan.activations

    # as written (not fused), so the tensors in front of each QuantizeLinear stay observable
    probe = Simulator(ctx.model, ctx.input_name, ctx.threads).probe(ctx.plan, names)
    for x in _inputs(ctx, blends, seed):
        qo = probe(x)
        for layer in layers:
            t = layer.node.input[0]
            s, z = specs[t].arrays()
            rows = _patches(torch, layer, fake_quantize(qo[t], s, z, specs[t].format))
            k = per_image // 4 if layer.depthwise else per_image
            pick = rng.choice(len(rows), size=min(max(k, 1), len(rows)), replace=False)
            layer.xq.append(rows[pick])


def _optimize(
    ctx: Context,
    layer: _Layer,
    iters: int,
    rng: np.random.Generator,
    device: str = "cpu",
    lr: float = LR,
) -> tuple[np.ndarray, float, float, int]:
    """Learned round-up bits for the layer's weight; also reconstruction MSE (nearest,
    learned) and how many roundings were still between down and up when fitting stopped."""
    torch = import_torch()
    name = layer.node.input[layer.ops.weight]
    spec = ctx.plan.weights[name]
    scale, zp = spec.arrays()
    fmt = spec.format
    w = layer.w.astype(np.float32)
    # Work on a [Cout, F] matrix whatever the op: rows of X are [F] (or [C, F] for depthwise).
    w2 = layer.ops.as_rows(w)
    s2 = np.broadcast_to(
        scale.reshape(-1, 1) if spec.axis is not None else scale, (w2.shape[0], 1)
    ).astype(np.float32)
    z2 = np.broadcast_to(
        zp.reshape(-1, 1) if spec.axis is not None else zp, (w2.shape[0], 1)
    ).astype(np.float32)

    def t(a: np.ndarray):
        return torch.tensor(np.asarray(a, dtype=np.float32), device=device)

    xq = t(np.concatenate(layer.xq))
    W, S, Z = t(w2), t(s2), t(z2)
    bias = t(np.zeros(w2.shape[0]) if layer.bias is None else layer.bias)

    def forward(x, weight):
        y = torch.einsum("ncf,cf->nc", x, weight) if layer.depthwise else x @ weight.T
        y = y + bias
        return y if layer.act is None else y.clamp(*layer.act)

    with torch.no_grad():
        # ||W x_q - W~ x_q||: the rounding's own effect on the layer's real (quantized) inputs.
        # Chasing the float output W x_f instead would also try to undo upstream noise,
        # which a few thousand sampled rows overfit (measured: worse on held-out images).
        target = forward(xq, W)
    floor = torch.floor(W / S)
    rest = (W / S - floor).clamp(0, 1)
    v = sr.start_logits(torch, rest)
    v.requires_grad_(True)
    opt = torch.optim.Adam([v], lr=lr)
    gen = torch.Generator(device=device).manual_seed(int(rng.integers(1 << 31)))

    def weight_of(r):
        return S * (torch.clamp(floor + r + Z, fmt.qmin, fmt.qmax) - Z)

    with torch.no_grad():
        nearest = float(((forward(xq, weight_of(torch.round(rest))) - target) ** 2).mean())
    n = xq.shape[0]
    for i in range(iters):
        idx = torch.randint(0, n, (min(BATCH, n),), generator=gen, device=device)
        hv = sr.rectified(torch, v)
        out = forward(xq[idx], weight_of(hv))
        # Squared error summed over output channels, averaged over rows; the regularizer
        # summed over all weights (the paper's and AIMET's normalization).
        loss = ((out - target[idx]) ** 2).sum(dim=-1).mean()
        b = sr.beta(i, iters)
        if b is not None:
            loss = loss + REG * sr.regularizer(hv, b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        hv = sr.rectified(torch, v)
        up = (hv >= 0.5).to(torch.int64)
        learned = float(((forward(xq, weight_of(up.float())) - target) ** 2).mean())
        undecided = sr.undecided(hv)
    bits = layer.ops.from_rows(up.cpu().numpy(), w.shape)
    return bits, nearest, learned, undecided


def activation_after(node: onnx.NodeProto, view: GraphView) -> tuple[float, float] | None:
    """Bounds of the Relu or constant Clip that alone reads the layer's output, if any."""
    after = view.next_nodes(node)
    if len(after) != 1:
        return None
    if after[0].op_type == "Relu":
        return (0.0, float("inf"))
    return clip_bounds(after[0], view) if after[0].op_type == "Clip" else None


class Options(base.Options):
    iters: int = Field(ITERS, ge=0)
    rows: int = Field(ROWS, ge=1)  # sampled input rows per layer
    seed: int = 0
    device: str | None = None  # auto, cpu, cuda
    blend: int = Field(0, ge=0)  # mixes of each calibration image with another
    lr: float = LR


def apply(ctx: Context, options: Options) -> Change:
    iters, rows, seed, blends = options.iters, options.rows, options.seed, options.blend
    device = torch_device(import_torch(), options.device, "adaround")
    rng = np.random.default_rng(seed)
    view = GraphView(ctx.model)
    layers = []
    for node in ctx.model.graph.node:
        d = ctx.plan.nodes.get(node.name)
        if not d or d.action != "quantize" or d.kind not in ("conv", "gemm", "matmul"):
            continue
        facts = ops.layer(node)
        wname = node.input[facts.weight]
        if wname not in ctx.plan.weights or node.input[0] not in ctx.plan.activations:
            continue
        bias = ctx.plan.biases.get(node.name)
        if bias is None and facts.bias_of(node):
            bias = view.weight(facts.bias_of(node))
        layer = _Layer(node, d.kind, view.weight(wname), None if bias is None else np.asarray(bias))
        layer.act = activation_after(node, view)
        if layer.supported:
            layers.append(layer)
    images = len(ctx.dataset) * (1 + blends)
    per_image = max(1, rows // max(1, images))
    improved, ratio, undecided = 0, [], 0
    weights = sum(layer.w.size for layer in layers)
    # Capture in groups whose sampled rows fit the memory budget, then optimize and free them.
    group: list[_Layer] = []
    used = 0
    for i, layer in enumerate(layers):
        group.append(layer)
        used += layer.row_bytes() * layer.rows(rows)
        if used >= BUDGET_BYTES or i == len(layers) - 1:
            _capture(ctx, group, per_image, rng, blends, seed)
            for g in group:
                ctx.step("adaround", i + 1 - len(group) + group.index(g), len(layers))
                bits, nearest, learned, open_ = _optimize(ctx, g, iters, rng, device, options.lr)
                undecided += open_
                if learned <= nearest:
                    ctx.plan.weight_rounding[g.node.input[g.ops.weight]] = pack_bits(bits)
                    improved += 1
                    ratio.append(learned / max(nearest, 1e-30))
                g.xq = []
            group, used = [], 0
    ratio_mean = float(np.mean(ratio)) if ratio else 1.0
    share = 100 * undecided / max(1, weights)
    return Change(
        "layers",
        improved,
        f"adaround: {improved}/{len(layers)} layers improved, reconstruction error x{ratio_mean:.2f} "
        f"of nearest rounding on average, {share:.1f} % of roundings "
        f"undecided when fitting stopped; {iters} iterations, {rows} rows from "
        f"{images} images, {device}",
        of=len(layers),
        error="layer reconstruction error relative to nearest rounding (mean over improved layers)",
        error_before=1.0,
        error_after=ratio_mean,
        details={
            "undecided_percent": share,
            "iterations": iters,
            "rows": rows,
            "images": images,
            "device": device,
        },
    )
