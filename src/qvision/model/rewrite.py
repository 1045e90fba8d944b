"""Semantics-preserving rewrites that give quantization a friendlier graph."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qvision.model.graph import GraphView


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

    BatchNormalization after Conv is folded; its statistics go into ``bn_stats`` if given.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    name_nodes(m)
    stats = fold_batch_norms(m)
    if bn_stats is not None:
        bn_stats.update(stats)
    if reduce_mean_to_global_pool(m) or stats:
        name_nodes(m)
        m = onnx.shape_inference.infer_shapes(m, strict_mode=False)
    return m


def fold_batch_norms(model: onnx.ModelProto) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fold each BatchNormalization that follows a Conv (its only consumer) into the Conv.

    Returns BN's (beta, |gamma|) keyed by the tensor the Conv now produces: the mean and
    standard deviation of that pre-activation, which analytical bias correction needs and
    which folding would otherwise lose.
    """
    view = GraphView(model)
    inits = {t.name: t for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for i in node.input:
            uses[i] = uses.get(i, 0) + 1
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    removed: set[str] = set()
    for bn in list(model.graph.node):
        if bn.op_type != "BatchNormalization" or any(o for o in bn.output[1:]):
            continue
        conv = view.producer.get(bn.input[0])
        params = [view.weight(n) for n in bn.input[1:5]]
        if (
            conv is None
            or conv.op_type != "Conv"
            or len(view.consumers.get(bn.input[0], [])) != 1
            or any(p is None for p in params)
            or conv.input[1] not in inits
            or uses.get(conv.input[1], 0) != 1
            or (
                len(conv.input) > 2
                and conv.input[2]
                and (conv.input[2] not in inits or uses[conv.input[2]] != 1)
            )
        ):
            continue
        gamma, beta, mean, var = (np.asarray(p, np.float64) for p in params)
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        k = gamma / np.sqrt(var + eps)
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        b = (
            numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
            if len(conv.input) > 2 and conv.input[2]
            else np.zeros_like(k)
        )
        w_name, b_name = f"{conv.name}__w_bn", f"{conv.name}__b_bn"
        model.graph.initializer.append(
            numpy_helper.from_array(
                (w * k.reshape(-1, *[1] * (w.ndim - 1))).astype(np.float32), w_name
            )
        )
        model.graph.initializer.append(
            numpy_helper.from_array(((b - mean) * k + beta).astype(np.float32), b_name)
        )
        del conv.input[1:]
        conv.input.extend([w_name, b_name])
        conv.output[0] = bn.output[0]
        stats[bn.output[0]] = (beta.astype(np.float32), np.abs(gamma).astype(np.float32))
        removed.add(bn.name)
    if removed:
        keep = [n for n in model.graph.node if n.name not in removed]
        del model.graph.node[:]
        model.graph.node.extend(keep)
        used = {i for n in model.graph.node for i in n.input}
        unused = [t for t in model.graph.initializer if t.name not in used]
        for t in unused:
            model.graph.initializer.remove(t)
    return stats
