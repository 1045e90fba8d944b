import onnx
import pytest
from onnx import TensorProto, helper

from qvision.model import GraphView, load_model


def test_producers_consumers_and_order(tiny_model):
    view = GraphView(load_model(tiny_model))
    assert view.producer["r"].op_type == "Relu"
    assert [n.op_type for n in view.consumers["c"]] == ["Relu"]
    assert view.is_constant("w") and not view.is_constant("c")
    assert view.weight("w").shape == (8, 3, 3, 3)
    assert [n.op_type for n in view.topological_order()] == [
        "Conv",
        "Relu",
        "GlobalAveragePool",
        "Flatten",
        "Gemm",
    ]
    assert view.op_counts()["Conv"] == 1


def test_topological_order_of_shuffled_graph_with_branches():
    nodes = [
        helper.make_node("Add", ["a", "b"], ["y"], name="add"),
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Neg", ["x"], ["b"], name="neg"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    view = GraphView(helper.make_model(graph))
    order = [n.name for n in view.topological_order()]
    assert order.index("add") > order.index("relu") and order.index("add") > order.index("neg")


def test_cycle_is_detected():
    nodes = [helper.make_node("Relu", ["b"], ["a"]), helper.make_node("Relu", ["a"], ["b"])]
    graph = helper.make_graph(
        nodes, "g", [], [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2])]
    )
    with pytest.raises(ValueError, match="cycle"):
        GraphView(helper.make_model(graph)).topological_order()


def test_match_chain_follows_single_consumers():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c1"], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("Clip", ["c2"], ["r2"], name="clip"),
        helper.make_node("Add", ["r2", "c2"], ["y"], name="add"),  # c2 has two consumers
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    view = GraphView(helper.make_model(graph))
    chains = view.match_chain(["Conv", "Relu|Clip"])
    assert [[n.name for n in c] for c in chains] == [["conv1", "relu1"]]
    assert len(view.match_chain([lambda n: n.op_type == "Conv", "Relu", "Conv"])) == 1
    assert isinstance(view.model, onnx.ModelProto)
