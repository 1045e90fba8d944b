"""Semantics-preserving rewrites that give quantization a friendlier graph."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qvision.model.graph import GraphView, clip_bounds, node_attr


def _reduce_axes(node: onnx.NodeProto, view: GraphView) -> list[int] | None:
    for a in node.attribute:
        if a.name == "axes":
            return list(a.ints)
    if len(node.input) > 1 and node.input[1]:
        w = view.weight(node.input[1])
        return None if w is None else [int(v) for v in np.atleast_1d(w)]
    return None


def _rank(view: GraphView, name: str) -> int | None:
    for vi in [*view.graph.value_info, *view.graph.input, *view.graph.output]:
        if vi.name == name and vi.type.tensor_type.HasField("shape"):
            return len(vi.type.tensor_type.shape.dim)
    return None


def reduce_mean_to_global_pool(model: onnx.ModelProto) -> int:
    """ReduceMean over H and W of a 4-D tensor -> GlobalAveragePool (+ Squeeze if keepdims=0).

    torch.export writes global pooling as ReduceMean, which has no quantized kernel in
    ONNX Runtime; GlobalAveragePool has one. Returns how many nodes were rewritten.
    """
    view = GraphView(model)
    new_nodes, count = [], 0
    for node in model.graph.node:
        if node.op_type != "ReduceMean" or _rank(view, node.input[0]) != 4:
            new_nodes.append(node)
            continue
        axes = _reduce_axes(node, view)
        if axes is None or sorted(a % 4 for a in axes) != [2, 3]:
            new_nodes.append(node)
            continue
        keep = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
        out = node.output[0]
        pooled = out if keep else f"{out}__pooled"
        new_nodes.append(
            helper.make_node("GlobalAveragePool", [node.input[0]], [pooled], name=node.name or None)
        )
        if not keep:
            axes_name = f"{out}__axes"
            model.graph.initializer.append(
                numpy_helper.from_array(np.array([2, 3], np.int64), axes_name)
            )
            new_nodes.append(
                helper.make_node(
                    "Squeeze", [pooled, axes_name], [out], name=f"{node.name}__squeeze"
                )
            )
        count += 1
    if count:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
    return count


def expose_tensors(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy whose graph outputs also include ``tensors`` (graph inputs are left out)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    infos = {v.name: v for v in [*m.graph.value_info, *m.graph.input, *m.graph.output]}
    existing = {o.name for o in m.graph.output} | {i.name for i in m.graph.input}
    for t in tensors:
        if t in existing:
            continue
        out = m.graph.output.add()
        if t in infos:
            out.CopyFrom(infos[t])
        else:
            out.name = t
            out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return m


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name; plans refer to nodes by name."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)


def prepare_for_quantization(
    model: onnx.ModelProto, bn_stats: dict | None = None
) -> onnx.ModelProto:
    """A copy with unique node names and quantization-friendly patterns, shapes re-inferred.

    BatchNormalization after Conv is folded, then constant Mul/Add after Conv (or before a
    Conv without padding); the BN statistics go into ``bn_stats`` if given. HardSwish
    spelled as x * clip(x + 3, 0, 6) / 6 or x * HardSigmoid(x) becomes one HardSwish
    (opset raised to 14).
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    name_nodes(m)
    stats = fold_batch_norms(m)
    affines = fold_conv_affines(m, stats) + fold_affines_into_next_conv(m)
    if bn_stats is not None:
        bn_stats.update(stats)
    swishes = 0
    if hardswish_chains(m, dry_run=True) or hardsigmoid_products(m, dry_run=True):
        m = _with_opset(m, 14)  # before the rewrite: the converter has no HardSwish-13
        swishes = hardswish_chains(m) + hardsigmoid_products(m)
    if reduce_mean_to_global_pool(m) or stats or affines or swishes:
        name_nodes(m)
        m = onnx.shape_inference.infer_shapes(m, strict_mode=False)
    return m


def _channel_vector(value: np.ndarray | None, channels: int, rank: int) -> np.ndarray | None:
    """A constant that broadcasts along axis 1 only (scalar, [1, C, 1, 1], [C, 1, 1]...) as [C]."""
    if value is None or value.ndim > rank:
        return None
    shape = (1,) * (rank - value.ndim) + value.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(value.reshape(-1), (channels,)).astype(np.float64)


def _owns_params(conv: onnx.NodeProto, inits: dict, uses: dict) -> bool:
    """Weight and bias (if any) are initializers that only this Conv reads: safe to rewrite."""
    params = [conv.input[1]] + ([conv.input[2]] if len(conv.input) > 2 and conv.input[2] else [])
    return all(n in inits and uses.get(n, 0) == 1 for n in params)


def _foldable_conv(view: GraphView, tensor: str, inits: dict, uses: dict) -> onnx.NodeProto | None:
    """The Conv producing ``tensor`` if it can absorb a per-channel affine: only one reader,
    weight and bias initializers used by it alone."""
    conv = view.producer.get(tensor)
    if (
        conv is None
        or conv.op_type != "Conv"
        or len(view.consumers.get(tensor, [])) != 1
        or tensor in {o.name for o in view.model.graph.output}
        or not _owns_params(conv, inits, uses)
    ):
        return None
    return conv


def _conv_params(conv: onnx.NodeProto, inits: dict) -> tuple[np.ndarray, np.ndarray]:
    """Weight and bias (zeros when absent) in float64."""
    w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
    b = (
        numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
        if len(conv.input) > 2 and conv.input[2]
        else np.zeros(w.shape[0])
    )
    return w, b


def _set_conv_params(model, conv, inits, w: np.ndarray, b: np.ndarray, tag: str) -> None:
    """New initializers for the Conv's weight and bias (the old ones go with ``_drop``)."""
    names = [f"{conv.name}__w_{tag}", f"{conv.name}__b_{tag}"]
    for name, value in zip(names, (w, b), strict=True):
        t = numpy_helper.from_array(value.astype(np.float32), name)
        model.graph.initializer.append(t)
        inits[name] = t
    del conv.input[1:]
    conv.input.extend(names)


def _fold_into(model, conv, inits, k: np.ndarray, c: np.ndarray, output: str, tag: str) -> None:
    """Conv output y becomes k * y + c per channel: W <- k W, b <- k b + c."""
    w, b = _conv_params(conv, inits)
    _set_conv_params(model, conv, inits, w * k.reshape(-1, *[1] * (w.ndim - 1)), b * k + c, tag)
    conv.output[0] = output


def _drop(model: onnx.ModelProto, removed: set[str]) -> None:
    """Remove nodes by name (the rewrites run after ``name_nodes``) and orphaned weights."""
    keep = [n for n in model.graph.node if n.name not in removed]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    used = {i for n in model.graph.node for i in n.input}
    for t in [t for t in model.graph.initializer if t.name not in used]:
        model.graph.initializer.remove(t)


def fold_batch_norms(model: onnx.ModelProto) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fold each BatchNormalization that follows a Conv (its only consumer) into the Conv.

    Returns BN's (beta, |gamma|) keyed by the tensor the Conv now produces: the mean and
    standard deviation of that pre-activation, which analytical bias correction needs and
    which folding would otherwise lose.
    """
    view = GraphView(model)
    inits = {t.name: t for t in model.graph.initializer}
    uses = _uses(model)
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    removed: set[str] = set()
    for bn in list(model.graph.node):
        if bn.op_type != "BatchNormalization" or any(o for o in bn.output[1:]):
            continue
        conv = _foldable_conv(view, bn.input[0], inits, uses)
        params = [view.weight(n) for n in bn.input[1:5]]
        if conv is None or any(p is None for p in params):
            continue
        gamma, beta, mean, var = (np.asarray(p, np.float64) for p in params)
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        k = gamma / np.sqrt(var + eps)
        _fold_into(model, conv, inits, k, beta - mean * k, bn.output[0], "bn")
        stats[bn.output[0]] = (beta.astype(np.float32), np.abs(gamma).astype(np.float32))
        removed.add(bn.name)
    if removed:
        _drop(model, removed)
    return stats


def _uses(model: onnx.ModelProto) -> dict[str, int]:
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for i in node.input:
            uses[i] = uses.get(i, 0) + 1
    return uses


def fold_conv_affines(model: onnx.ModelProto, bn_stats: dict | None = None) -> int:
    """Fold Mul/Add by per-channel or scalar constants that follow a Conv into its weights
    and bias (PP-LCNet's learnable affine blocks, exporters' separate bias Adds). One
    quantized Conv instead of a Conv and float element-wise ops the runtime cannot fuse.
    Keeps ``bn_stats`` (the pre-activation's mean and std) in step. Returns how many."""
    folded = 0
    while True:
        view = GraphView(model)
        inits = {t.name: t for t in model.graph.initializer}
        uses = _uses(model)
        node = next((n for n in model.graph.node if _affine_of(n, view, inits, uses)), None)
        if node is None:
            return folded
        x, k, c = _affine_of(node, view, inits, uses)
        conv = view.producer[x]
        _fold_into(model, conv, inits, k, c, node.output[0], f"{node.op_type.lower()}{folded}")
        if bn_stats is not None and x in bn_stats:
            mean, std = bn_stats.pop(x)
            bn_stats[node.output[0]] = (
                (mean * k + c).astype(np.float32),
                (std * np.abs(k)).astype(np.float32),
            )
        _drop(model, {node.name})
        folded += 1


def _affine_of(node, view: GraphView, inits: dict, uses: dict):
    """(conv output, k, c) when ``node`` is Conv-output * const or + const, foldable."""
    if node.op_type not in ("Mul", "Add") or len(node.input) != 2:
        return None
    for x, const in (node.input, node.input[::-1]):
        conv = _foldable_conv(view, x, inits, uses)
        value = view.weight(const)
        if conv is None or value is None:
            continue
        w = view.weight(conv.input[1])
        channels = w.shape[0]
        vec = _channel_vector(np.asarray(value, np.float64), channels, w.ndim)
        if vec is None or view.is_constant(x):
            continue
        if node.op_type == "Mul":
            return x, vec, np.zeros(channels)
        return x, np.ones(channels), vec
    return None


def fold_affines_into_next_conv(model: onnx.ModelProto) -> int:
    """Fold ``x * a + c`` (per-channel or scalar constants; either op alone too) into the
    Conv that alone reads it, when that Conv pads nothing: W[:, i] <- a_i W[:, i],
    b <- b + sum_i c_i W[:, i]. With padding the border would see c instead of zeros,
    so those stay. Returns how many."""
    folded = 0
    while True:
        view = GraphView(model)
        inits = {t.name: t for t in model.graph.initializer}
        uses = _uses(model)
        found = next(
            (f for n in model.graph.node if (f := _affine_before(n, view, inits, uses))), None
        )
        if found is None:
            return folded
        conv, x, a, c, removed = found
        w, b = _conv_params(conv, inits)
        b = b + (w.sum(axis=tuple(range(2, w.ndim))) * c).sum(axis=1)
        _set_conv_params(
            model, conv, inits, w * a.reshape(1, -1, *[1] * (w.ndim - 2)), b, f"pre{folded}"
        )
        conv.input[0] = x
        _drop(model, removed)
        folded += 1


def _affine_before(conv, view: GraphView, inits: dict, uses: dict):
    """(conv, x, a, c, nodes to drop) when ``conv`` reads x * a + c and can absorb it."""
    if (
        conv.op_type != "Conv"
        or int(node_attr(conv, "group", 1)) != 1
        or any(node_attr(conv, "pads", [0]))
        or node_attr(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID")
        or not _owns_params(conv, inits, uses)
    ):
        return None
    w = view.weight(conv.input[1])
    channels, rank = w.shape[1], w.ndim
    a, c = np.ones(channels), np.zeros(channels)
    t, removed = conv.input[0], set()
    graph_outputs = {o.name for o in view.model.graph.output}
    for op in ("Add", "Mul"):  # walk back: the Add (if any) comes last
        node = view.producer.get(t)
        if (
            node is None
            or node.op_type != op
            or len(view.consumers.get(t, [])) != 1
            or t in graph_outputs
        ):
            continue
        pair = [(i, view.weight(k)) for i, k in enumerate(node.input)]
        consts = [(i, v) for i, v in pair if v is not None]
        if len(consts) != 1:
            continue
        vec = _channel_vector(np.asarray(consts[0][1], np.float64), channels, rank)
        if vec is None:
            continue
        if op == "Add":
            c = vec
        else:
            a = vec
        removed.add(node.name)
        t = node.input[1 - consts[0][0]]
    if not removed or view.is_constant(t):
        return None
    return conv, t, a, c, removed


def _with_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if current >= version:
        return model
    from onnx import version_converter

    return version_converter.convert_version(model, version)


def _scalar(view: GraphView, name: str) -> float | None:
    v = view.weight(name) if name else None
    return (
        float(np.asarray(v).reshape(-1)[0]) if v is not None and np.asarray(v).size == 1 else None
    )


def hardswish_chains(model: onnx.ModelProto, dry_run: bool = False) -> int:
    """x * clip(x + 3, 0, 6) / 6 (Paddle's and some exporters' HardSwish: four float ops
    that ONNX Runtime runs one by one) -> HardSwish(x), which needs opset 14. Returns how
    many; ``dry_run`` only counts."""
    view = GraphView(model)
    graph_outputs = {o.name for o in model.graph.output}

    def only(t: str, op: str) -> onnx.NodeProto | None:
        readers = view.consumers.get(t, [])
        if len(readers) == 1 and readers[0].op_type == op and t not in graph_outputs:
            return readers[0]
        return None

    def is_sixth(node) -> str | None:  # the other input when node divides by 6 / multiplies by 1/6
        for i, k in enumerate(node.input):
            v = _scalar(view, k)
            if v is not None and (
                (node.op_type == "Div" and i == 1 and v == 6.0)
                or (node.op_type == "Mul" and abs(v - 1 / 6) < 1e-7)
            ):
                return node.input[1 - i]
        return None

    removed: set[str] = set()
    count = 0
    for add in list(model.graph.node):
        if add.op_type != "Add" or add.name in removed:
            continue
        x = next(
            (add.input[1 - i] for i, k in enumerate(add.input) if _scalar(view, k) == 3.0), None
        )
        clip = only(add.output[0], "Clip")
        if x is None or clip is None:
            continue
        if clip_bounds(clip, view) != (0.0, 6.0):
            continue
        chain = [add, clip]
        nxt = view.consumers.get(clip.output[0], [])
        if len(nxt) != 1 or clip.output[0] in graph_outputs:
            continue
        n1 = nxt[0]
        if n1.op_type == "Mul" and x in n1.input and clip.output[0] in n1.input:  # (x * c) / 6
            n2 = only(n1.output[0], "Div") or only(n1.output[0], "Mul")
            if n2 is None or is_sixth(n2) != n1.output[0]:
                continue
        elif n1.op_type in ("Div", "Mul") and is_sixth(n1) == clip.output[0]:  # x * (c / 6)
            n2 = only(n1.output[0], "Mul")
            if n2 is None or set(n2.input) != {x, n1.output[0]}:
                continue
        else:
            continue
        chain += [n1, n2]
        count += 1
        if dry_run:
            continue
        out = n2.output[0]
        for n in chain:
            removed.add(n.name)
        hs = onnx.helper.make_node("HardSwish", [x], [out], name=f"{add.name}__hardswish")
        idx = list(model.graph.node).index(n2)
        model.graph.node.insert(idx, hs)
    if removed:
        _drop(model, removed)
    return count


def hardsigmoid_products(model: onnx.ModelProto, dry_run: bool = False) -> int:
    """x * HardSigmoid(x) with HardSwish's slope 1/6 and offset 1/2 (paddle2onnx at opsets
    below 14) -> HardSwish(x): one op ONNX Runtime fuses after a quantized Conv instead of
    two it runs in float. A HardSigmoid gating another tensor (squeeze-excitation) stays.
    Returns how many; ``dry_run`` only counts."""
    view = GraphView(model)
    graph_outputs = {o.name for o in model.graph.output}
    removed: set[str] = set()
    count = 0
    for hs in list(model.graph.node):
        if hs.op_type != "HardSigmoid" or hs.output[0] in graph_outputs:
            continue
        alpha, beta = node_attr(hs, "alpha", 0.2), node_attr(hs, "beta", 0.5)
        readers = view.consumers.get(hs.output[0], [])
        if abs(alpha - 1 / 6) > 1e-6 or abs(beta - 0.5) > 1e-6 or len(readers) != 1:
            continue
        mul = readers[0]
        if mul.op_type != "Mul" or sorted(mul.input) != sorted([hs.input[0], hs.output[0]]):
            continue
        count += 1
        if dry_run:
            continue
        removed |= {hs.name, mul.name}
        swish = helper.make_node(
            "HardSwish", [hs.input[0]], [mul.output[0]], name=f"{hs.name}__hardswish"
        )
        model.graph.node.insert(list(model.graph.node).index(mul), swish)
    if removed:
        _drop(model, removed)
    return count
