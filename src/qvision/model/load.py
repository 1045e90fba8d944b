"""Read an ONNX file safely and bring it to the form every later stage assumes.

Normal form: passes the checker, opset >= 13, weights are initializers (not Constant
nodes), shapes inferred. The user's file is never modified.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, numpy_helper

from qvision.errors import QVisionError
from qvision.fileio import atomic_path, check_output_path
from qvision.model.simplify import fill_output_shapes, simplify

MIN_OPSET = 13
_TWO_GB = 2**31


def _check_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Refuse external data that points outside the model's folder (path traversal)."""
    base = path.parent.resolve()
    for tensor in _all_tensors(model.graph):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        loc = info.get("location", "")
        if not loc or os.path.isabs(loc):
            raise QVisionError(
                f"tensor '{tensor.name}' has external data at absolute path '{loc}'", path
            )
        target = (base / loc).resolve()
        if base != target and base not in target.parents:
            raise QVisionError(
                f"tensor '{tensor.name}' has external data outside the model's folder: '{loc}'",
                path,
            )
        if not target.is_file():
            raise QVisionError(
                f"external data file '{loc}' for tensor '{tensor.name}' is missing", path
            )


def _all_tensors(graph: onnx.GraphProto):
    """Initializers and tensor attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for sub in attr.graphs:
                yield from _all_tensors(sub)


def external_data_files(path: str | Path) -> list[Path]:
    """The external-data files beside a model file that its tensors (attributes and
    subgraphs included) reference, each once; missing or out-of-folder ones are left out."""
    path = Path(path)
    return _external_files(onnx.load(str(path), load_external_data=False), path)


def _external_files(model: onnx.ModelProto, path: Path) -> list[Path]:
    base = path.parent.resolve()
    files: dict[Path, Path] = {}  # resolved -> as the model names it
    for tensor in _all_tensors(model.graph):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        loc = {e.key: e.value for e in tensor.external_data}.get("location", "")
        target = (base / loc).resolve()
        if loc and base in target.parents and target.is_file():
            files.setdefault(target, path.parent / loc)
    return list(files.values())


def model_size(path: str | Path) -> int:
    """Bytes of a model on disk: the file plus the external-data files it references."""
    return Path(path).stat().st_size + sum(f.stat().st_size for f in external_data_files(path))


def read_model(path: str | Path) -> onnx.ModelProto:
    """Parse an ONNX file (and its external data) without changing anything."""
    path = Path(path)
    model = _parse_checked(path)
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError) as exc:
        raise QVisionError(f"cannot read external data: {_first_line(exc)}", path) from None
    return model


def model_files(path: str | Path) -> list[Path]:
    """The files an ONNX model is made of: the model and each external-data file it needs.
    Refuses a file that is not an ONNX model and external data that is missing or lies
    outside the model's folder; the weights themselves are not read."""
    path = Path(path)
    return [path, *_external_files(_parse_checked(path), path)]


def _parse_checked(path: Path) -> onnx.ModelProto:
    """The model's protobuf (external data not loaded), checked as read_model checks it."""
    if not path.exists():
        raise QVisionError("file not found", path)
    if path.is_dir():
        raise QVisionError("is a folder, expected an .onnx file", path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise QVisionError(
            f"not a valid ONNX file (cannot parse protobuf: {_first_line(exc)})", path
        ) from None
    # Arbitrary bytes can parse as an empty protobuf; a real model has a graph and an IR version.
    if model.ir_version <= 0 or not model.HasField("graph") or not model.graph.node:
        raise QVisionError(
            "not a valid ONNX model (no graph or IR version; truncated or wrong file?)", path
        )
    _check_external_data(model, path)
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def constants_to_initializers(model: onnx.ModelProto) -> int:
    """Turn top-level Constant nodes into initializers; returns how many were moved.

    PP-OCR exports keep every weight as a Constant node, which hides them from
    calibration and weight quantization.
    """
    graph = model.graph
    keep, moved = [], 0
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            keep.append(node)
            continue
        tensor = _constant_value(node)
        if tensor is None:
            keep.append(node)
            continue
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        moved += 1
    if moved:
        del graph.node[:]
        graph.node.extend(keep)
    return moved


def _constant_value(node: onnx.NodeProto) -> TensorProto | None:
    attr = node.attribute[0] if len(node.attribute) == 1 else None
    if attr is None:
        return None
    name = attr.name
    if name == "value":
        tensor = TensorProto()
        tensor.CopyFrom(attr.t)
        return tensor
    scalars = {
        "value_float": (np.float32, attr.f),
        "value_int": (np.int64, attr.i),
        "value_floats": (np.float32, list(attr.floats)),
        "value_ints": (np.int64, list(attr.ints)),
    }
    if name in scalars:
        dtype, value = scalars[name]
        return numpy_helper.from_array(np.array(value, dtype=dtype))
    return None  # sparse_value / string values: leave the node alone


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 0


def normalize_model(model: onnx.ModelProto, path: str | Path = "<model>") -> onnx.ModelProto:
    """Checker, opset upgrade, Constant -> initializer, exact simplification (constant
    shape arithmetic, Pad into Conv, Identity), shape inference. Returns a new model."""
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    model = model_copy
    fill_output_shapes(model)
    shapeless = [o.name for o in model.graph.output if not o.type.tensor_type.HasField("shape")]
    if shapeless:
        raise QVisionError(
            f"output '{shapeless[0]}' is declared without a shape and neither ONNX nor ONNX "
            "Runtime can infer its rank; declare it in the model",
            path,
        )
    _run_checker(model, path)
    opset = default_opset(model)
    if opset < MIN_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, MIN_OPSET)
        except Exception as exc:  # the converter raises bare RuntimeErrors of many kinds
            raise QVisionError(
                f"cannot upgrade opset {opset} to {MIN_OPSET}: {_first_line(exc)}", path
            ) from None
    # After the upgrade: the converter itself adds Constant nodes (e.g. Unsqueeze axes).
    constants_to_initializers(model)
    if model.ByteSize() < _TWO_GB:
        simplify(model)
    try:
        if model.ByteSize() < _TWO_GB:
            model = onnx.shape_inference.infer_shapes(
                model, check_type=False, strict_mode=False, data_prop=True
            )
    except Exception as exc:
        raise QVisionError(f"shape inference failed: {_first_line(exc)}", path) from None
    return model


def _run_checker(model: onnx.ModelProto, path: str | Path) -> None:
    if model.ByteSize() >= _TWO_GB:
        return  # the in-memory checker cannot take >2 GB protos; ORT will validate on load
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise QVisionError(f"fails the ONNX checker: {_first_line(exc)}", path) from None


def load_model(path: str | Path, normalize: bool = True) -> onnx.ModelProto:
    """Read ``path`` and (by default) normalize it. Never writes to ``path``."""
    model = read_model(path)
    return normalize_model(model, path) if normalize else model


def save_model(model: onnx.ModelProto, out: str | Path, inputs: tuple = ()) -> Path:
    """Write atomically; refuses to overwrite any of ``inputs``."""
    out = check_output_path(out, inputs)
    if model.ByteSize() >= _TWO_GB:
        raise QVisionError("models over 2 GB are not supported yet", out)
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
    return out


@dataclass(frozen=True)
class ImageInput:
    """The image tensor a vision model takes: name, layout and (possibly symbolic) dims."""

    name: str
    layout: str  # "nchw" or "nhwc"
    batch: int | None  # None when dynamic
    channels: int
    height: int | None
    width: int | None
    elem_type: int


def _dims(value_info: onnx.ValueInfoProto) -> list[int | None]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in shape.dim]


def fixed_batch(value_info: onnx.ValueInfoProto) -> int:
    """The batch a model input was exported with (it then takes exactly that many images a
    run); 0 when the batch dim is dynamic."""
    dims = _dims(value_info)
    return (dims[0] or 0) if dims else 0


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def image_input(model: onnx.ModelProto, path: str | Path = "<model>") -> ImageInput:
    """The single image input, or a clear error saying why the model does not take images."""
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise QVisionError(f"expected one image input, model has {len(inputs)} ({names})", path)
    vi = inputs[0]
    elem = vi.type.tensor_type.elem_type
    if elem not in (TensorProto.FLOAT, TensorProto.FLOAT16):
        raise QVisionError(
            f"input '{vi.name}' is {TensorProto.DataType.Name(elem)}, expected a float image tensor",
            path,
        )
    dims = _dims(vi)
    shown = "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
    if len(dims) != 4:
        raise QVisionError(
            f"input '{vi.name}' has shape {shown}, expected an image tensor [N, C, H, W] or [N, H, W, C]",
            path,
        )
    n, a, b, c = dims
    if a in (1, 3):
        return ImageInput(vi.name, "nchw", n, a, b, c, elem)
    if c in (1, 3):
        return ImageInput(vi.name, "nhwc", n, c, a, b, elem)
    raise QVisionError(
        f"input '{vi.name}' has shape {shown}: no 1- or 3-channel axis, so not an image tensor",
        path,
    )
