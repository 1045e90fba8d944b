"""Readable layer labels (qvision.model.names): generated node names become op, position
and shape; meaningful names are kept, their repeated scope prefixes dropped."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from qvision.model.names import is_generated, layer_labels, short_name


def _init(name, *shape):
    return numpy_helper.from_array(np.zeros(shape, np.float32), name)


def _model(nodes, inits, out="y"):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_generated_names_get_op_position_and_shape():
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], "node_Conv_810", pads=[1] * 4),
        helper.make_node("Relu", ["a"], ["b"], "n4_2"),
        helper.make_node("Conv", ["b", "w2"], ["c"], "", group=32, pads=[1] * 4),
        helper.make_node("Conv", ["c", "w3"], ["d"], "p2o.Conv.7"),
        helper.make_node("Add", ["d", "d"], ["e"], "Add_3"),
        helper.make_node("GlobalAveragePool", ["e"], ["f"], "/GlobalAveragePool"),
        helper.make_node("Flatten", ["f"], ["g"], "node_flatten"),
        helper.make_node("Gemm", ["g", "w4"], ["y"], "node_linear", transB=1),
    ]
    inits = [_init("w1", 32, 3, 3, 3), _init("w2", 32, 1, 3, 3), _init("w3", 64, 32, 1, 1)]
    inits.append(_init("w4", 10, 64))
    labels = layer_labels(_model(nodes, inits))
    assert labels == {
        "node_Conv_810": "Conv #1 3×3 3→32",
        "n4_2": "Relu #1",
        "": "Conv #2 3×3 depthwise 32",
        "p2o.Conv.7": "Conv #3 1×1 32→64",
        "Add_3": "Add #1",
        "/GlobalAveragePool": "GlobalAveragePool #1",
        "node_flatten": "Flatten #1",
        "node_linear": "Gemm #1 64→10",  # transB: the weight is stored [out, in]
    }


def test_meaningful_names_are_kept_without_repeated_scopes():
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], "/features/features.0/features.0.0/Conv"),
        helper.make_node("Conv", ["a", "w2"], ["b"], "/layer1/layer1.0/conv1/Conv", group=2),
        helper.make_node("Relu", ["b"], ["c"], "stem_act"),
        helper.make_node("MatMul", ["c", "w3"], ["y"], "classifier"),
    ]
    inits = [_init("w1", 8, 3, 3, 3), _init("w2", 16, 4, 3, 3), _init("w3", 8, 5)]
    labels = layer_labels(_model(nodes, inits))
    assert labels == {
        "/features/features.0/features.0.0/Conv": "features.0.0/Conv 3×3 3→8",
        "/layer1/layer1.0/conv1/Conv": "layer1.0/conv1/Conv 3×3 8→16 g2",
        "stem_act": "stem_act Relu",  # the op is added where the name does not say it
        "classifier": "classifier MatMul 8→5",
    }
    assert short_name("conv1") == "conv1" and short_name("/a/a.b/c") == "a.b/c"
    assert not is_generated("stem_act", "Relu") and not is_generated("/model/Conv", "Conv")
    for name in ("", "123", "Conv_0", "conv.3", "/Conv_1", "node_add_140", "n4", "p2o.Mul.2"):
        assert is_generated(name, "Conv" if "onv" in name or not name else "Add"), name


def test_torch_scope_names_the_module_and_skips_a_folded_batchnorm():
    conv = helper.make_node("Conv", ["x", "w1"], ["a"], "node_Conv_882")
    meta = {
        "pkg.torch.onnx.name_scopes": "['', '_blocks.0', '_blocks.0._bn1', '_native_bn_1']",
        "pkg.torch.onnx.class_hierarchy": "['m.EfficientNet', 'm.MBConvBlock', "
        "'torch.nn.modules.batchnorm.BatchNorm2d', 'aten._native_batch_norm.default']",
    }
    relu = helper.make_node("Relu", ["a"], ["y"], "n4")
    bad = {"pkg.torch.onnx.name_scopes": "not a list ["}  # unreadable: no scope, no error
    for node, values in ((conv, meta), (relu, bad)):
        for k, v in values.items():
            node.metadata_props.add(key=k, value=v)
    labels = layer_labels(_model([conv, relu], [_init("w1", 32, 3, 3, 3)]))
    assert labels == {"node_Conv_882": "Conv #1 3×3 3→32 (_blocks.0)", "n4": "Relu #1"}


def test_positions_follow_the_data_flow_when_a_node_was_appended_late():
    first = helper.make_node("Relu", ["x"], ["a"], "Relu_0")
    late = helper.make_node("Relu", ["a"], ["b"], "Relu_9")  # stored last, runs second
    last = helper.make_node("Relu", ["b"], ["y"], "Relu_1")
    model = _model([first, last, late], [])
    assert [layer_labels(model)[n] for n in ("Relu_0", "Relu_9", "Relu_1")] == [
        "Relu #1",
        "Relu #2",
        "Relu #3",
    ]
