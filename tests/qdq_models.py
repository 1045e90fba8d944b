"""Tiny float models for the PTQ tests, built with onnx.helper."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qvision.data.preprocess import METADATA_KEY, Preprocess

PRE16 = Preprocess(resize=20, crop=16)


def graph_model(nodes, inits, out_shape, size=16, name="m", outputs=None) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        outputs or [helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.metadata_props.add(key=METADATA_KEY, value=PRE16.to_json())
    onnx.checker.check_model(model)
    return model


def mobile_block(seed: int = 0) -> onnx.ModelProto:
    """Conv-Relu, depthwise Conv-Clip(0,6), pointwise Conv, residual Add, Relu, MaxPool (output)."""
    r = np.random.default_rng(seed)
    f = np.float32
    inits = {
        "w1": (r.standard_normal((8, 3, 3, 3)) * 0.4).astype(f),
        "b1": (r.standard_normal(8) * 0.1).astype(f),
        "w2": (r.standard_normal((8, 1, 3, 3)) * 0.5).astype(f),
        "b2": (r.standard_normal(8) * 0.1).astype(f),
        "w3": (r.standard_normal((8, 8, 1, 1)) * 0.4).astype(f),
        "b3": (r.standard_normal(8) * 0.1).astype(f),
        "zero": np.array(0.0, f),
        "six": np.array(6.0, f),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=8, name="dw"),
        helper.make_node("Clip", ["c2", "zero", "six"], ["r2"], name="clip"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="pw"),
        helper.make_node("Add", ["c3", "r1"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["r3"], name="relu3"),
        helper.make_node(
            "MaxPool", ["r3"], ["out"], kernel_shape=[2, 2], strides=[2, 2], name="pool"
        ),
    ]
    return graph_model(nodes, inits, ["N", 8, 8, 8])


def op_zoo(seed: int = 1) -> onnx.ModelProto:
    """Every op kind of the ORT CPU table, ending in float outputs of a Gemm and a MatMul."""
    r = np.random.default_rng(seed)
    f = np.float32
    inits = {
        "w1": (r.standard_normal((8, 3, 3, 3)) * 0.4).astype(f),
        "b1": (r.standard_normal(8) * 0.1).astype(f),
        "w2": (r.standard_normal((8, 8, 1, 1)) * 0.3).astype(f),
        "scales": np.array([1, 1, 2, 2], f),
        "shape": np.array([0, -1], np.int64),
        "axes": np.array([2, 3], np.int64),
        "axes0": np.array([1], np.int64),
        "starts": np.array([0], np.int64),
        "ends": np.array([8], np.int64),
        "sl_axes": np.array([1], np.int64),
        "gw": (r.standard_normal((5, 16)) * 0.3).astype(f),
        "gb": (r.standard_normal(5) * 0.1).astype(f),
        "mw": (r.standard_normal((16, 4)) * 0.3).astype(f),
    }
    nodes = [
        helper.make_node(
            "Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv1"
        ),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Sigmoid", ["r1"], ["sg"], name="sigmoid"),
        helper.make_node("Mul", ["r1", "sg"], ["m"], name="mul"),
        helper.make_node("LeakyRelu", ["m"], ["lr"], alpha=0.1, name="leaky"),
        helper.make_node("Conv", ["lr", "w2"], ["c2"], name="conv2"),
        helper.make_node(
            "AveragePool", ["c2"], ["ap"], kernel_shape=[2, 2], strides=[2, 2], name="avgpool"
        ),
        helper.make_node("Resize", ["ap", "", "scales"], ["rs"], mode="nearest", name="resize"),
        helper.make_node("Concat", ["rs", "c2"], ["cat"], axis=1, name="concat"),
        helper.make_node("Transpose", ["cat"], ["tp"], perm=[0, 1, 3, 2], name="transpose"),
        helper.make_node("GlobalAveragePool", ["tp"], ["gap"], name="gap"),
        helper.make_node("Squeeze", ["gap", "axes"], ["sq"], name="squeeze"),
        helper.make_node("Unsqueeze", ["sq", "axes0"], ["us"], name="unsqueeze"),
        helper.make_node("Flatten", ["us"], ["fl"], axis=1, name="flatten"),
        helper.make_node("Reshape", ["fl", "shape"], ["flat"], name="reshape"),
        helper.make_node("Slice", ["flat", "starts", "ends", "sl_axes"], ["sl"], name="slice"),
        # a softmax inside the network: one at the end would be post-processing, kept float
        helper.make_node("Softmax", ["sl"], ["sm"], axis=1, name="softmax"),
        helper.make_node("Concat", ["sl", "sm"], ["flat2"], axis=1, name="concat2"),
        helper.make_node("Gemm", ["flat2", "gw", "gb"], ["logits"], transB=1, name="gemm"),
        helper.make_node("MatMul", ["flat2", "mw"], ["probs"], name="matmul"),
        helper.make_node("HardSwish", ["logits"], ["out"], name="hardswish"),
    ]
    outputs = [
        helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 5]),
        helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 4]),
    ]
    return graph_model(nodes, inits, None, outputs=outputs)


def lcnet_block(seed: int = 2, spelled: bool = True) -> onnx.ModelProto:
    """PP-LCNet style: Conv, a scalar affine (Mul, Add), HardSwish (float on ONNX Runtime
    CPU; ``spelled`` as x * clip(x + 3, 0, 6) / 6, as Paddle exports it), then a Conv."""
    r = np.random.default_rng(seed)
    f = np.float32
    inits = {
        "w1": (r.standard_normal((8, 3, 3, 3)) * 0.4).astype(f),
        "b1": (r.standard_normal(8) * 0.1).astype(f),
        "a": np.array([1.3], f),
        "c": np.array([-0.2], f),
        "three": np.array(3.0, f),
        "zero": np.array(0.0, f),
        "six": np.array(6.0, f),
        "w2": (r.standard_normal((4, 8, 1, 1)) * 0.4).astype(f),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Mul", ["a", "c1"], ["m1"], name="scale"),
        helper.make_node("Add", ["m1", "c"], ["y"], name="shift"),
        helper.make_node("Add", ["y", "three"], ["y3"], name="hs_add"),
        helper.make_node("Clip", ["y3", "zero", "six"], ["yc"], name="hs_clip"),
        helper.make_node("Mul", ["y", "yc"], ["ym"], name="hs_mul"),
        helper.make_node("Div", ["ym", "six"], ["h"], name="hs_div"),
        helper.make_node("Conv", ["h", "w2"], ["out"], name="conv2"),
    ]
    if not spelled:
        nodes[3:7] = [helper.make_node("HardSwish", ["y"], ["h"], name="hardswish")]
        for k in ("three", "zero", "six"):
            del inits[k]
    return graph_model(nodes, inits, ["N", 4, 16, 16])


def mobilenet_like(dead_bias: float = 0.0):
    """Stem Conv-Clip, expand Conv-Clip, depthwise Conv-Clip, linear projection, residual
    Add, GlobalAveragePool, Gemm. ``dead_bias``: stem channel 0 gets weights near 1e-7 and
    this bias (trained networks have such channels: EfficientNet-Lite0's stem does)."""
    r = np.random.default_rng(5)
    f = np.float32
    w1 = (r.standard_normal((16, 3, 3, 3)) * 0.3).astype(f)
    b1 = (r.standard_normal(16) * 0.1).astype(f)
    if dead_bias:
        w1[0] = (r.standard_normal((3, 3, 3)) * 1e-7).astype(f)
        b1[0], b1[1] = dead_bias, -dead_bias
        w1[1] = (r.standard_normal((3, 3, 3)) * 1e-7).astype(f)
    inits = {
        "w1": w1,
        "b1": b1,
        "w2": (r.standard_normal((32, 16, 1, 1)) * 0.3).astype(f),
        "b2": (r.standard_normal(32) * 0.1).astype(f),
        "w3": (r.standard_normal((32, 1, 3, 3)) * 0.4).astype(f),
        "b3": (r.standard_normal(32) * 0.1).astype(f),
        "w4": (r.standard_normal((16, 32, 1, 1)) * 0.2).astype(f),
        "b4": (r.standard_normal(16) * 0.1).astype(f),
        "gw": (r.standard_normal((10, 16)) * 0.5).astype(f),
        "gb": (r.standard_normal(10) * 0.1).astype(f),
        "zero": np.array(0.0, f),
        "six": np.array(6.0, f),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1] * 4, strides=[2, 2]),
        helper.make_node("Clip", ["c1", "zero", "six"], ["r1"], name="clip1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="expand"),
        helper.make_node("Clip", ["c2", "zero", "six"], ["r2"], name="clip2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], pads=[1] * 4, group=32, name="dw"),
        helper.make_node("Clip", ["c3", "zero", "six"], ["r3"], name="clip3"),
        helper.make_node("Conv", ["r3", "w4", "b4"], ["c4"], name="project"),
        helper.make_node("Add", ["c4", "r1"], ["a"], name="add"),
        helper.make_node("GlobalAveragePool", ["a"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["fl"], name="flatten"),
        helper.make_node("Gemm", ["fl", "gw", "gb"], ["out"], transB=1, name="fc"),
    ]
    for i, n in enumerate(nodes):
        n.name = n.name or f"conv{i}"
    from qvision.model.rewrite import prepare_for_quantization

    return prepare_for_quantization(graph_model(nodes, inits, ["N", 10]))


def plan_context(model, flat_dir, weight_bits, act_bits=None, pre=PRE16):
    """An algorithm Context over a min-max plan with ``weight_bits`` weights (VNNI grids)
    and ``act_bits`` activations (8 when None)."""
    from qvision.data import image_folder
    from qvision.quant.algorithms import Context
    from qvision.quant.calibrate import collect
    from qvision.quant.planner import activation_tensors, build_plan, decide_nodes
    from qvision.targets import TARGETS

    target = TARGETS["ort-cpu-vnni"].model_copy(deep=True)
    target.weight.bits = weight_bits
    target.weight_bits = {}
    decisions = decide_nodes(model, target, set())
    ds = image_folder(flat_dir)
    obs, _ = collect(model, ds, pre, activation_tensors(model, decisions), "minmax")
    ranges = {t: o.range() for t, o in obs.items()}
    plan = build_plan(model, ranges, target, "minmax", "x", decisions, act_bits=act_bits)
    return Context(model, plan, target, ds, pre, "input")
