"""Checks of a saved (possibly hand-edited) plan against the model it is applied to and the
target it names, before anything is written: an edited plan must never become a broken
model that exits 0.

Each problem is one sentence naming the entry; the error shows the first and counts the
rest, so a plan with many edits is fixed one line at a time.
"""

from __future__ import annotations

import math

import onnx

from qvision.errors import QVisionError
from qvision.qmath import QFormat
from qvision.quant.plan import QuantPlan, QuantSpec, unpack_offsets
from qvision.targets import TARGETS

# grids the writer and the ONNX Runtime/OpenVINO kernels handle: 8 bits, 7 (AVX2's u8s8
# kernels) and 4 (--weights int4, in int8 containers or packed int4)
WEIGHT_BITS = (4, 7, 8)


def check_plan(plan: QuantPlan, model: onnx.ModelProto, source) -> None:
    """Raise a QVisionError naming ``source`` (the plan file) at the first problem."""
    problems = problems_of(plan, model)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise QVisionError(problems[0] + more, source)


def problems_of(plan: QuantPlan, model: onnx.ModelProto) -> list[str]:
    g = model.graph
    # a target qvision does not know is written for ONNX Runtime (the writer's rule): its
    # grids are checked for themselves only
    target = TARGETS.get(plan.target)
    nodes = {n.name for n in g.node}
    inits = {i.name: tuple(i.dims) for i in g.initializer}
    tensors = {i.name for i in g.input} | {o for n in g.node for o in n.output}
    out: list[str] = []
    for name in plan.nodes:
        if name not in nodes:
            out.append(f"nodes: '{name}' is not a node of the model")
    for name in plan.biases:
        if name not in nodes:
            out.append(f"biases: '{name}' is not a node of the model")
    act = target.activation if target else None
    for name, spec in plan.activations.items():
        where = f"activations['{name}']"
        if name not in tensors:
            out.append(f"{where}: not a tensor of the model")
        # the target's grid, or its 4-bit counterpart (--acts 4)
        four = spec.bits == 4 and spec.dtype in ("int4", "uint4")
        if act and (spec.dtype, spec.bits) != (act.dtype, act.bits) and not four:
            out.append(
                f"{where}: {spec.bits}-bit {spec.dtype}, but target {target.name} runs "
                f"{act.bits}-bit {act.dtype} activations (or 4-bit ones)"
            )
        out += _grid(where, spec, None)
    for name, spec in plan.weights.items():
        where = f"weights['{name}']"
        if name not in inits:
            out.append(f"{where}: not an initializer of the model")
        if spec.bits not in WEIGHT_BITS:
            out.append(
                f"{where}: {spec.bits}-bit weights are not supported "
                f"({', '.join(map(str, WEIGHT_BITS))} bits are)"
            )
        out += _grid(where, spec, inits.get(name))
    for name, text in plan.weight_offsets.items():
        where = f"weight_offsets['{name}']"
        if name not in plan.weights:
            out.append(f"{where}: not a quantized weight of the plan")
        elif name in inits:
            try:
                unpack_offsets(text, inits[name])
            except ValueError as exc:
                out.append(f"{where}: {exc}")
    return out


def _grid(where: str, spec: QuantSpec, shape: tuple[int, ...] | None) -> list[str]:
    """Scales, zero points and channel counts of one spec."""
    try:
        fmt = QFormat(spec.dtype, spec.bits, spec.symmetric, spec.narrow)
    except ValueError as exc:
        return [f"{where}: {exc}"]
    out = []
    if len(spec.scale) != len(spec.zero_point):
        out.append(f"{where}: {len(spec.scale)} scales but {len(spec.zero_point)} zero points")
    if spec.axis is None and len(spec.scale) != 1:
        out.append(f"{where}: per-tensor (no axis) but {len(spec.scale)} scales")
    if spec.axis is not None and shape is not None:
        if not -len(shape) <= spec.axis < len(shape):
            out.append(f"{where}: axis {spec.axis} outside a {len(shape)}-d tensor")
        elif len(spec.scale) != shape[spec.axis]:
            out.append(
                f"{where}: {len(spec.scale)} scales for {shape[spec.axis]} channels on axis "
                f"{spec.axis}"
            )
    bad = [s for s in spec.scale if not (math.isfinite(s) and s > 0)]
    if bad:
        out.append(f"{where}: scale {bad[0]} (scales must be finite and above 0)")
    outside = [z for z in spec.zero_point if not fmt.qmin <= z <= fmt.qmax]
    if outside:
        out.append(
            f"{where}: zero point {outside[0]} outside {fmt.qmin}..{fmt.qmax} "
            f"({spec.bits}-bit {spec.dtype})"
        )
    elif spec.symmetric and fmt.signed and any(spec.zero_point):
        out.append(f"{where}: symmetric grid with a zero point other than 0")
    return out
