"""Exact graph simplification: what exporters leave that a fixed-shape model does not need.

TorchScript exports compute "same" padding and flatten shapes at run time (Shape ->
Gather -> ... -> Pad / Reshape); paddle2onnx leaves Identity chains. None of it changes
the numbers once the input's height and width are fixed, but it keeps ops in float that
a quantized runtime would otherwise fuse. Each pass here is exact: the float outputs are
the same before and after (ONNX Runtime computes the folded values with its own kernels).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from qvision.model.graph import node_attr

# Never folded: a fresh value each run, or a result that is no model's weight.
_NONDETERMINISTIC = {
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}
# A folded tensor is stored in the model: keep it no bigger than this many elements, or
# twice the constants it is computed from (a ConstantOfShape filling an image stays a node).
_FOLD_MIN_LIMIT = 1 << 16
_ROUNDS = 8


def simplify(model: onnx.ModelProto) -> Counter:
    """Run every pass until none changes the graph; in place. Counts per pass."""
    counts: Counter = Counter()
    for _ in range(_ROUNDS):
        _infer(model)
        changed = Counter(
            identity=drop_identities(model),
            shape=fold_shapes(model),
            constant=fold_constants(model),
        )
        changed["pad"] = fold_pads(model)
        changed["dead"] = drop_dead_nodes(model)
        counts.update(changed)
        if not sum(changed.values()):
            break
    _prune_initializers(model)
    return +counts


def fill_output_shapes(model: onnx.ModelProto) -> None:
    """Graph outputs declared without a shape (paddle2onnx does this; the checker refuses
    it) get the inferred one: ONNX's shape inference, else ONNX Runtime's (which resolves
    the computed reshapes of sequence heads), with unknown dims left symbolic."""
    if all(o.type.tensor_type.HasField("shape") for o in model.graph.output):
        return
    _infer(model)
    missing = [o for o in model.graph.output if not o.type.tensor_type.HasField("shape")]
    if not missing:
        return
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]  # ORT trusts a shapeless value_info over its own inference
    opts = _session_options()  # its constant folding resolves the computed reshapes
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    try:
        sess = ort.InferenceSession(
            bare.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
    except Exception:  # the model does not load: the checker's message says why
        return
    shapes = {o.name: o.shape for o in sess.get_outputs()}
    for out in missing:
        if not isinstance(shapes.get(out.name), list):
            continue
        shape = out.type.tensor_type.shape
        for d in shapes[out.name]:
            dim = shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            elif isinstance(d, str):
                dim.dim_param = d


def _session_options() -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


def _infer(model: onnx.ModelProto) -> None:
    """Re-infer shapes in place (value_info of removed tensors goes with it)."""
    del model.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(
            model, check_type=False, strict_mode=False, data_prop=True
        )
    except Exception:  # inference is advice here; the loader reports real failures
        return
    model.graph.value_info.extend(inferred.graph.value_info)
    for out, inf in zip(model.graph.output, inferred.graph.output, strict=True):
        if not out.type.tensor_type.HasField("shape") and inf.type.tensor_type.HasField("shape"):
            out.type.CopyFrom(inf.type)


# -- shapes of tensors, and the values of the small integer tensors computed from them ----
def _dims(model: onnx.ModelProto) -> dict[str, list]:
    """Each tensor's dims: an int, a symbol string (dim_param, or one unique per unknown dim)."""
    dims = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        dims[vi.name] = [
            d.dim_value
            if d.HasField("dim_value")
            else (f"param:{d.dim_param}" if d.dim_param else f"{vi.name}:{i}")
            for i, d in enumerate(t.shape.dim)
        ]
    for init in model.graph.initializer:
        dims[init.name] = list(init.dims)
    return dims


def _const(inits: dict, name: str) -> np.ndarray | None:
    t = inits.get(name)
    return None if t is None else numpy_helper.to_array(t)


@dataclass
class _Val:
    """A small integer tensor computed from shapes: its items (ints, or dim symbols that
    are unknown until run time), element type, and whether it is rank 0."""

    items: list
    dtype: type = np.int64
    scalar: bool = False

    @property
    def known(self) -> bool:
        return all(isinstance(v, int) for v in self.items)


def _shape_value(node: onnx.NodeProto, values: dict, inits: dict, dims: dict) -> _Val | None:
    """The value of a shape-arithmetic node's output when it derives from a Shape."""
    op = node.op_type

    def val(i: int) -> _Val | None:
        if i >= len(node.input) or not node.input[i]:
            return None
        name = node.input[i]
        if name in values:
            return values[name]
        c = _const(inits, name)
        if c is None or c.dtype.kind not in "iu" or c.ndim > 1:
            return None
        return _Val([int(v) for v in c.reshape(-1)], c.dtype.type, c.ndim == 0)

    if op == "Shape":
        shape = dims.get(node.input[0])
        if shape is None:
            return None
        start, end = node_attr(node, "start", 0), node_attr(node, "end", None)
        return _Val(list(shape[slice(start, end)]))
    if not any(i in values for i in node.input):
        return None  # constants alone: fold_constants computes these in ONNX Runtime
    if op == "Cast":
        to = onnx.helper.tensor_dtype_to_np_dtype(node_attr(node, "to"))
        x = val(0)
        return None if x is None or to.kind not in "iu" else _Val(x.items, to.type, x.scalar)
    if op == "Identity":
        return val(0)
    if op == "Gather":
        data, idx = val(0), _const(inits, node.input[1])
        if data is None or data.scalar or idx is None or idx.ndim > 1:
            return None
        if node_attr(node, "axis", 0) != 0:
            return None
        try:
            items = [data.items[int(i)] for i in idx.reshape(-1)]
        except IndexError:
            return None
        return _Val(items, data.dtype, idx.ndim == 0)
    if op == "Slice":
        data, starts, ends = val(0), val(1), val(2)
        axes, steps = val(3), val(4)
        if data is None or data.scalar or starts is None or ends is None:
            return None
        if axes is not None and axes.items not in ([0], [-1]):
            return None
        step = steps.items[0] if steps is not None else 1
        if not isinstance(step, int) or step == 0:
            return None
        items = data.items[slice(starts.items[0], ends.items[0], step)]
        return _Val(items, data.dtype)
    if op == "Concat":
        parts = [val(i) for i in range(len(node.input))]
        if any(p is None or p.scalar for p in parts):
            return None
        return _Val([v for p in parts for v in p.items], parts[0].dtype)
    if op == "Unsqueeze":
        x = val(0)
        return _Val(x.items, x.dtype) if x is not None and x.scalar else None
    if op == "Squeeze":
        x = val(0)
        ok = x is not None and not x.scalar and len(x.items) == 1
        return _Val(x.items, x.dtype, True) if ok else None
    return None


def fold_shapes(model: onnx.ModelProto) -> int:
    """Shape arithmetic whose value is known once the input's fixed dims are: its result
    becomes a constant. A Reshape target that copies a dynamic dim of its own input (the
    batch, in ``x.view(x.size(0), -1)``) gets 0 there, ONNX's "copy this dim". Returns how
    many tensors became constants."""
    dims = _dims(model)
    inits = {t.name: t for t in model.graph.initializer}
    graph_outputs = {o.name for o in model.graph.output}
    values: dict[str, _Val] = {}
    folded = 0
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or len(node.output) != 1:
            continue
        if node.op_type == "Reshape":
            folded += _reshape_copy_dims(model, node, values, dims, inits)
            continue
        value = _shape_value(node, values, inits, dims)
        out = node.output[0]
        if value is None or out in inits:
            continue
        values[out] = value
        if value.known and out not in graph_outputs:
            arr = np.array(value.items, value.dtype)
            t = numpy_helper.from_array(arr.reshape(()) if value.scalar else arr, out)
            model.graph.initializer.append(t)
            inits[out] = t
            folded += 1
    if folded:
        # their producers are unused now; drop_dead_nodes removes the nodes feeding them
        keep = [n for n in model.graph.node if not all(o in inits for o in n.output if o)]
        del model.graph.node[:]
        model.graph.node.extend(keep)
    return folded


def _reshape_copy_dims(
    model: onnx.ModelProto, node: onnx.NodeProto, values: dict, dims: dict, inits: dict
) -> int:
    target = values.get(node.input[1])
    data = dims.get(node.input[0])
    if target is None or target.known or data is None or node_attr(node, "allowzero", 0):
        return 0
    fixed = []
    for i, v in enumerate(target.items):
        if isinstance(v, int):
            fixed.append(v)
        elif i < len(data) and data[i] == v:
            fixed.append(0)  # the same dim of the input: ONNX's "copy"
        else:
            return 0
    name = f"{node.output[0]}__shape"
    t = numpy_helper.from_array(np.array(fixed, np.int64), name)
    model.graph.initializer.append(t)
    inits[name] = t
    node.input[1] = name
    return 1


# -- constant subgraphs, computed by ONNX Runtime -----------------------------------------
def fold_constants(model: onnx.ModelProto) -> int:
    """Every node whose inputs are all constants becomes a constant (bounded in size);
    ONNX Runtime computes the values, so they are what the runtime would compute."""
    graph = model.graph
    runtime_inputs = {i.name for i in graph.input}  # an initializer listed as input can be fed
    const = {t.name for t in graph.initializer if t.name not in runtime_inputs}
    graph_outputs = {o.name for o in graph.output}
    foldable: list[onnx.NodeProto] = []
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if (
            inputs
            and all(i in const for i in inputs)
            and node.op_type not in _NONDETERMINISTIC
            and not any(
                a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                for a in node.attribute
            )
            and not any(o in graph_outputs for o in node.output)
        ):
            foldable.append(node)
            const.update(o for o in node.output if o)
    if not foldable:
        return 0
    values = _run_constant_nodes(model, foldable)
    if values is None:
        return 0
    sources = _source_sizes(model, foldable)
    inits = {t.name for t in graph.initializer}
    folded_nodes = []
    for node in foldable:
        outs = [o for o in node.output if o]
        if all(
            o in values and values[o].size <= max(_FOLD_MIN_LIMIT, 2 * sources.get(o, 0))
            for o in outs
        ):
            folded_nodes.append(node)
    if not folded_nodes:
        return 0
    removed = {id(n) for n in folded_nodes}
    remaining = [n for n in graph.node if id(n) not in removed]
    needed = {i for n in remaining for i in n.input} | graph_outputs
    for node in folded_nodes:
        for o in node.output:
            if o and o in needed and o not in inits:
                graph.initializer.append(numpy_helper.from_array(values[o], o))
    del graph.node[:]
    graph.node.extend(remaining)
    return len(folded_nodes)


def _source_sizes(model: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> dict[str, int]:
    """Elements of the stored constants each folded tensor is computed from."""
    size = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    for node in nodes:
        total = sum(size.get(i, 0) for i in node.input if i)
        for o in node.output:
            size[o] = total
    return size


def _run_constant_nodes(
    model: onnx.ModelProto, nodes: list[onnx.NodeProto]
) -> dict[str, np.ndarray] | None:
    """Values of every output of ``nodes`` (which read only initializers and each other)."""
    sub = onnx.ModelProto()
    sub.ir_version = model.ir_version
    sub.opset_import.extend(model.opset_import)
    g = sub.graph
    g.name = "constants"
    g.node.extend(nodes)
    produced = {o for n in nodes for o in n.output if o}
    wanted = {i for n in nodes for i in n.input if i} - produced
    g.initializer.extend(t for t in model.graph.initializer if t.name in wanted)
    names = sorted(produced)
    g.output.extend(onnx.helper.make_empty_tensor_value_info(o) for o in names)
    try:
        sess = ort.InferenceSession(
            sub.SerializeToString(), _session_options(), providers=["CPUExecutionProvider"]
        )
        results = sess.run(names, {})
    except Exception:  # an op ORT cannot run standalone: leave the graph as it is
        return None
    return {n: np.asarray(v) for n, v in zip(names, results, strict=True)}


# -- Pad into the Conv/pool that reads it -------------------------------------------------
def fold_pads(model: onnx.ModelProto) -> int:
    """A constant zero Pad of the spatial dims whose readers are all Convs (or average pools
    counting padding) becomes those readers' own ``pads``. Returns how many Pads went."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in graph.output}
    removed = []
    for pad in graph.node:
        if pad.op_type != "Pad" or pad.domain not in ("", "ai.onnx"):
            continue
        spatial = _spatial_pads(pad, inits)
        readers = consumers.get(pad.output[0], [])
        if (
            spatial is None
            or not readers
            or pad.output[0] in graph_outputs
            or not all(_takes_pads(r, pad.output[0]) for r in readers)
        ):
            continue
        for r in readers:
            k = len(spatial) // 2
            old = list(node_attr(r, "pads", [0] * (2 * k)))
            new = [a + b for a, b in zip(old, spatial, strict=True)]
            _set_attr(r, "pads", new)
            if r.op_type == "AveragePool":
                _set_attr(r, "count_include_pad", 1)
            r.input[0] = pad.input[0]
        removed.append(pad)
    for pad in removed:
        graph.node.remove(pad)
    return len(removed)


def _spatial_pads(pad: onnx.NodeProto, inits: dict) -> list[int] | None:
    """The Pad's [begin..., end...] for dims 2.. when it pads only those, by >= 0, with 0."""
    if node_attr(pad, "mode", b"constant") not in (b"constant", "constant"):
        return None
    if len(pad.input) > 1:
        pads = _const(inits, pad.input[1])
    else:  # opset < 11 keeps them as an attribute
        pads = node_attr(pad, "pads")
        pads = None if pads is None else np.array(pads)
    if pads is None or (len(pad.input) > 3 and pad.input[3]):
        return None  # computed pads, or an axes input (opset 18): leave
    value = 0.0
    if len(pad.input) > 2 and pad.input[2]:
        v = _const(inits, pad.input[2])
        if v is None or v.size != 1:
            return None
        value = float(v.reshape(-1)[0])
    elif len(pad.input) <= 1:
        value = float(node_attr(pad, "value", 0.0))
    pads = [int(p) for p in pads.reshape(-1)]
    rank = len(pads) // 2
    begin, end = pads[:rank], pads[rank:]
    if value != 0.0 or rank < 3 or any(begin[:2]) or any(end[:2]) or min(pads) < 0:
        return None
    return begin[2:] + end[2:]


def _takes_pads(node: onnx.NodeProto, tensor: str) -> bool:
    if node.input[0] != tensor or tensor in node.input[1:]:
        return False
    if node_attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return False
    if node.op_type == "Conv":
        return True
    if node.op_type == "AveragePool":  # zeros counted in the mean, as the Pad made them
        return bool(node_attr(node, "count_include_pad", 0)) or not any(
            node_attr(node, "pads", [0])
        )
    return False


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    node.attribute.append(onnx.helper.make_attribute(name, value))


# -- Identity, dead nodes ------------------------------------------------------------------
def _subgraph_names(model: onnx.ModelProto) -> set[str]:
    """Every tensor name mentioned inside If/Loop/Scan bodies (renaming them is unsafe)."""
    names: set[str] = set()

    def walk(g: onnx.GraphProto) -> None:
        for n in g.node:
            names.update(n.input)
            names.update(n.output)
            for a in n.attribute:
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    walk(sub)

    for n in model.graph.node:
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                walk(sub)
    return names


def _is_passthrough(node: onnx.NodeProto, inits: dict) -> bool:
    """Identity, or a Dropout that is one at inference (no mask read, not training)."""
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type == "Identity":
        return True
    if node.op_type != "Dropout" or (len(node.output) > 1 and node.output[1]):
        return False
    if len(node.input) > 2 and node.input[2]:
        training = _const(inits, node.input[2])
        return training is not None and not bool(training)
    return True


def drop_identities(model: onnx.ModelProto) -> int:
    """Remove Identity (and inference-time Dropout) nodes by renaming tensors. Returns how many."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    unsafe = _subgraph_names(model)
    graph_outputs = {o.name for o in graph.output}
    graph_inputs = {i.name for i in graph.input}
    removed = 0
    for node in list(graph.node):
        if not _is_passthrough(node, inits):
            continue
        src, dst = node.input[0], node.output[0]
        if src in unsafe or dst in unsafe:
            continue
        if dst not in graph_outputs:
            old, new = dst, src
        elif src not in graph_outputs | graph_inputs and src not in inits:
            old, new = src, dst  # keep the graph output's name: the producer writes it
        else:
            continue
        graph.node.remove(node)
        _rename(graph, old, new)
        removed += 1
    return removed


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for n in graph.node:
        for i, name in enumerate(n.input):
            if name == old:
                n.input[i] = new
        for i, name in enumerate(n.output):
            if name == old:
                n.output[i] = new


def drop_dead_nodes(model: onnx.ModelProto) -> int:
    """Nodes none of whose outputs reach a graph output. Returns how many went."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output if o):
            keep.append(node)
            needed.update(i for i in node.input if i)
    removed = len(graph.node) - len(keep)
    if removed:
        del graph.node[:]
        graph.node.extend(reversed(keep))
    return removed


def _prune_initializers(model: onnx.ModelProto) -> None:
    graph = model.graph
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    used |= _subgraph_names(model)
    inputs = {i.name for i in graph.input}
    for t in [t for t in graph.initializer if t.name not in used and t.name not in inputs]:
        graph.initializer.remove(t)
