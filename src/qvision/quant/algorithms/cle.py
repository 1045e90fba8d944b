"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization", sec. 4.1).

For two layers joined through a positively homogeneous activation (identity or ReLU),
scaling output channel i of the first by 1/s_i and input channel i of the second by s_i
leaves the float function unchanged. s_i = sqrt(r1_i / r2_i) gives both the same range,
so no channel is starved by another's outliers. Chains (pointwise -> depthwise ->
pointwise) are swept until the scales settle.

ReLU6 (Clip 0..6) is not homogeneous: relu6(z)/s clips at 6/s, a different threshold per
channel, which one Clip cannot express. ``cle`` therefore leaves pairs joined by a
bounded Clip alone (float outputs stay exact); ``cle-relu`` replaces those clips by ReLU
first, as DFQ does for MobileNetV2, which changes the float model and is reported.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qvision.model.graph import GraphView, clip_bounds, node_attr
from qvision.quant.algorithms import base
from qvision.quant.algorithms.base import Change
from qvision.quant.algorithms.context import Context

SWEEPS = 20
S_MIN, S_MAX = 1e-3, 1e3  # dead channels (range ~0) must not get absurd factors


def _layer(node: onnx.NodeProto, view: GraphView) -> str | None:
    """'dense' or 'depthwise' for a Conv we can rescale, else None."""
    if node.op_type != "Conv" or len(node.input) < 2 or view.weight(node.input[1]) is None:
        return None
    w = view.weight(node.input[1])
    groups = int(node_attr(node, "group", 1))
    if groups == 1:
        return "dense"
    if w.shape[1] == 1 and groups == w.shape[0]:
        return "depthwise"
    return None


def relu_clip_max(node: onnx.NodeProto, view: GraphView) -> float | None:
    """Upper bound of a Clip with lower bound 0; None if it is not such a clip."""
    bounds = clip_bounds(node, view)
    return None if bounds is None or bounds[0] != 0.0 else bounds[1]


def find_pairs(model: onnx.ModelProto, relax_relu6: bool) -> tuple[list, list, int]:
    """(first conv, activation node or None, second conv) chains; bounded clips to relax;
    how many pairs were skipped because of a bounded clip."""
    view = GraphView(model)
    pairs, relax, skipped = [], [], 0
    for node in model.graph.node:
        if _layer(node, view) is None:
            continue
        users = view.consumers.get(node.output[0], [])
        if len(users) != 1 or node.output[0] in {o.name for o in model.graph.output}:
            continue
        act, nxt = None, users[0]
        if nxt.op_type in ("Relu", "Clip"):
            act = nxt
            after = view.consumers.get(act.output[0], [])
            if len(after) != 1 or act.output[0] in {o.name for o in model.graph.output}:
                continue
            nxt = after[0]
        if _layer(nxt, view) is None or nxt.input[0] != (act or node).output[0]:
            continue
        if act is not None and act.op_type == "Clip":
            hi = relu_clip_max(act, view)
            if hi is None:
                continue
            if np.isfinite(hi):
                if not relax_relu6:
                    skipped += 1
                    continue
                relax.append(act)
        pairs.append((node, act, nxt))
    return pairs, relax, skipped


def _relu(model: onnx.ModelProto, clip: onnx.NodeProto) -> None:
    relu = helper.make_node("Relu", [clip.input[0]], [clip.output[0]], name=clip.name)
    clip.CopyFrom(relu)


def equalize(
    model: onnx.ModelProto, relax_relu6: bool = False, bn_stats: dict | None = None
) -> dict:
    """Equalize in place; returns a summary (pairs, skipped, relaxed, imbalance before/after)."""
    pairs, relax, skipped = find_pairs(model, relax_relu6)
    for clip in relax:
        _relu(model, clip)
    inits = {t.name: t for t in model.graph.initializer}
    arrays: dict[str, np.ndarray] = {}

    def arr(name: str) -> np.ndarray:
        if name not in arrays:
            arrays[name] = numpy_helper.to_array(inits[name]).astype(np.float64)
        return arrays[name]

    view = GraphView(model)
    kinds = {n.name: _layer(n, view) for p in pairs for n in (p[0], p[2])}
    before = imbalance(model)
    for _ in range(SWEEPS):
        largest = 0.0
        for first, _act, second in pairs:
            w1, w2 = arr(first.input[1]), arr(second.input[1])
            r1 = np.abs(w1).reshape(w1.shape[0], -1).max(axis=1)
            if kinds[second.name] == "depthwise":
                r2 = np.abs(w2).reshape(w2.shape[0], -1).max(axis=1)
            else:
                r2 = np.abs(w2).max(axis=(0, *range(2, w2.ndim)))
            if r1.shape != r2.shape:
                continue
            ok = (r1 > 0) & (r2 > 0)
            s = np.ones_like(r1)
            s[ok] = np.clip(np.sqrt(r1[ok] / r2[ok]), S_MIN, S_MAX)
            shape1 = (-1, *[1] * (w1.ndim - 1))
            arrays[first.input[1]] = w1 / s.reshape(shape1)
            if len(first.input) > 2 and first.input[2]:
                arrays[first.input[2]] = arr(first.input[2]) / s
            if kinds[second.name] == "depthwise":
                arrays[second.input[1]] = w2 * s.reshape(shape1)
            else:
                arrays[second.input[1]] = w2 * s.reshape(1, -1, *[1] * (w2.ndim - 2))
            if bn_stats is not None and first.output[0] in bn_stats:
                mean, std = bn_stats[first.output[0]]
                bn_stats[first.output[0]] = (
                    (mean / s).astype(np.float32),
                    (std / s).astype(np.float32),
                )
            largest = max(largest, float(np.abs(np.log(s)).max(initial=0.0)))
        if largest < 1e-4:
            break
    for name, a in arrays.items():
        inits[name].CopyFrom(numpy_helper.from_array(a.astype(np.float32), name))
    return {
        "pairs": len(pairs),
        "skipped_relu6": skipped,
        "relaxed_relu6": len(relax),
        "imbalance_before": before,
        "imbalance_after": imbalance(model),
    }


def imbalance(model: onnx.ModelProto) -> float:
    """Mean over Conv weights of max channel range / median channel range: what per-tensor
    quantization suffers from, and what equalization lowers."""
    view = GraphView(model)
    ratios = []
    for node in model.graph.node:
        if _layer(node, view) is None:
            continue
        w = view.weight(node.input[1])
        r = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
        if np.median(r) > 0:
            ratios.append(float(r.max() / np.median(r)))
    return float(np.mean(ratios)) if ratios else 1.0


class Options(base.Options):
    pass  # none: the ReLU6 choice is the algorithm's name (cle, cle-relu)


def apply_relu(ctx: Context, options: Options) -> Change:
    return apply(ctx, options, relax_relu6=True)


def apply(ctx: Context, options: Options, relax_relu6: bool = False) -> Change:
    info = equalize(ctx.model, relax_relu6, ctx.bn_stats)
    name = "cle-relu" if relax_relu6 else "cle"
    note = (
        f"{info['relaxed_relu6']} ReLU6 replaced by ReLU (float model changed)"
        if relax_relu6
        else f"{info['skipped_relu6']} pairs joined by ReLU6 left alone (float exact)"
    )
    return Change(
        "layer pairs",
        info["pairs"],
        f"{name}: equalized {info['pairs']} layer pairs; {note}; weight range imbalance "
        f"{info['imbalance_before']:.1f} -> {info['imbalance_after']:.1f}",
        error="weight range imbalance",
        error_before=float(info["imbalance_before"]),
        error_after=float(info["imbalance_after"]),
        details={k: info[k] for k in ("relaxed_relu6", "skipped_relu6") if k in info},
    )
