"""The op facts, written once. Per handler kind: which inputs are activations, whether it
has a weight, whether its kernel needs a quantized output. Per weighted layer: which input
is the weight and which the bias, which weight axis holds the output channels and which is
summed over, and which axis of the data input holds its channels. The planner, the
writer, the recovery algorithms and the energy estimate read them here instead of each
knowing Gemm's transB."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from qvision.model.graph import GraphView, node_attr

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class Kind:
    """A handler kind, as a target's op table maps op types to them."""

    activation_inputs: tuple[int, ...] | None  # inputs that take a Q/DQ pair; None: all
    weighted: bool = False  # has a weight input (``layer`` says which, and its layout)
    # ONNX Runtime's integer kernel needs its output quantized (QLinearConv,
    # QLinearGlobalAveragePool, QLinearSigmoid...)
    quantized_output: bool = False

    def inputs(self, node: onnx.NodeProto) -> list[str]:
        """The node's activation inputs, by name (empty names are absent optional inputs)."""
        idx = self.activation_inputs
        return [
            node.input[i]
            for i in (range(len(node.input)) if idx is None else idx)
            if i < len(node.input)
        ]


KINDS: dict[str, Kind] = {
    "conv": Kind((0,), weighted=True, quantized_output=True),
    "gemm": Kind((0,), weighted=True),
    "matmul": Kind((0,), weighted=True),
    "binary": Kind((0, 1)),
    "pool": Kind((0,), quantized_output=True),
    "unary": Kind((0,), quantized_output=True),
    "same-scale": Kind((0,)),
    "concat": Kind(None),  # all inputs
}
WEIGHTED_KINDS = frozenset(k for k, v in KINDS.items() if v.weighted)


@dataclass(frozen=True)
class Layer:
    """Where a weighted node keeps things. Axes index the weight unless named ``data``."""

    weight: int  # input index of the weight
    bias: int | None  # input index of the bias; None when the op takes none
    out_axis: int  # output channels: the per-channel scale axis
    in_axis: int  # the summed (input-channel) axis; Conv's is per group
    data_axis: int  # the channel axis of the data input
    groups: int = 1  # Conv/ConvTranspose groups

    def bias_of(self, node: onnx.NodeProto) -> str | None:
        """The bias tensor's name, if the node has one."""
        b = self.bias
        return node.input[b] if b is not None and len(node.input) > b and node.input[b] else None

    def input_channels(self, shape: tuple[int, ...]) -> int:
        """Channels of the data input, from the weight's shape (all groups)."""
        return shape[self.in_axis] * (self.groups if self.in_axis == 1 else 1)

    def as_rows(self, w: np.ndarray) -> np.ndarray:
        """The weight as [output channels, everything else] (one row per output channel)."""
        moved = np.moveaxis(w, self.out_axis, 0)
        return moved.reshape(moved.shape[0], -1)

    def from_rows(self, rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """``as_rows`` undone: an array shaped as the weight."""
        moved = np.moveaxis(np.empty(shape, dtype=bool), self.out_axis, 0).shape
        return np.moveaxis(rows.reshape(moved), 0, self.out_axis)


def layer(node: onnx.NodeProto) -> Layer | None:
    """The node's facts, or None for an op without a weight."""
    op = node.op_type
    if op in ("Conv", "ConvTranspose"):
        groups = int(node_attr(node, "group", 1))
        if op == "Conv":  # W [Cout, Cin/groups, k...]
            return Layer(1, 2, 0, 1, 1, groups)
        return Layer(1, 2, 1, 0, 1, groups)  # W [Cin, Cout/groups, k...]
    if op == "Gemm":  # W [N, K] with transB, else [K, N]; A [K, M] with transA
        trans_b = bool(node_attr(node, "transB", 0))
        data = 0 if node_attr(node, "transA", 0) else 1
        return Layer(1, 2, 0 if trans_b else 1, 1 if trans_b else 0, data)
    if op == "MatMul":  # a quantized weight is [K, N]; an activation B may be [..., K, N]
        return Layer(1, None, 1, -2, -1)
    return None


def is_depthwise(node: onnx.NodeProto, view: GraphView) -> bool:
    """A Conv with one input channel per group: its own kernel layout in ONNX Runtime."""
    lay = layer(node)
    w = view.weight(node.input[lay.weight]) if lay and len(node.input) > lay.weight else None
    return node.op_type == "Conv" and w is not None and lay.groups > 1 and w.shape[1] == 1
