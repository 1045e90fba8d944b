import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qvision.errors import QVisionError
from qvision.fileio import sha256_file
from qvision.model import image_input, load_model
from qvision.model.load import constants_to_initializers, default_opset

from conftest import tiny_classifier


def _save_with_external(model: onnx.ModelProto, path, location: str) -> None:
    """Point the first initializer at ``location`` (relative to the model) as external data."""
    model = onnx.ModelProto.FromString(model.SerializeToString())  # onnx.save edits its argument
    onnx.save(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    m = onnx.load(str(path), load_external_data=False)
    for e in m.graph.initializer[0].external_data:
        if e.key == "location":
            e.value = location
    onnx.save(m, str(path))


def test_loads_and_normalizes_without_touching_the_file(tiny_model):
    before = sha256_file(tiny_model)
    model = load_model(tiny_model)
    assert sha256_file(tiny_model) == before
    inp = image_input(model)
    assert (inp.name, inp.layout, inp.batch, inp.channels, inp.height, inp.width) == (
        "input",
        "nchw",
        None,
        3,
        32,
        32,
    )
    # shape inference filled the intermediate tensors
    assert {v.name for v in model.graph.value_info} >= {"c", "r", "g", "f"}


def test_external_data_inside_folder_is_loaded(tmp_path):
    src = load_model(tiny_classifier(tmp_path / "a.onnx"))
    path = tmp_path / "ext.onnx"
    _save_with_external(src, path, "weights.bin")
    model = load_model(path)
    w = numpy_helper.to_array(model.graph.initializer[0])
    assert np.array_equal(w, numpy_helper.to_array(src.graph.initializer[0]))


@pytest.mark.parametrize("location", ["../weights.bin", "/etc/passwd", "sub/../../weights.bin"])
def test_external_data_outside_folder_is_refused(tmp_path, location):
    sub = tmp_path / "model"
    sub.mkdir()
    src = load_model(tiny_classifier(tmp_path / "a.onnx"))
    path = sub / "ext.onnx"
    _save_with_external(src, path, "weights.bin")
    os.replace(sub / "weights.bin", tmp_path / "weights.bin")
    _save_with_external(src, path, location)
    with pytest.raises(QVisionError, match="external data"):
        load_model(path)


def test_external_data_symlink_escaping_is_refused(tmp_path):
    sub = tmp_path / "model"
    sub.mkdir()
    src = load_model(tiny_classifier(tmp_path / "a.onnx"))
    path = sub / "ext.onnx"
    _save_with_external(src, path, "weights.bin")
    os.replace(sub / "weights.bin", tmp_path / "outside.bin")
    os.symlink(tmp_path / "outside.bin", sub / "weights.bin")
    with pytest.raises(QVisionError, match="outside the model's folder"):
        load_model(path)


def test_missing_truncated_and_text_files(tmp_path, tiny_model):
    with pytest.raises(QVisionError, match="file not found"):
        load_model(tmp_path / "nope.onnx")
    data = tiny_model.read_bytes()
    for cut in (len(data) // 2, len(data) - 7, 20):
        bad = tmp_path / f"cut{cut}.onnx"
        bad.write_bytes(data[:cut])
        with pytest.raises(QVisionError, match="not a valid ONNX"):
            load_model(bad)
    text = tmp_path / "text.onnx"
    text.write_text("this is a text file, not a model\n")
    with pytest.raises(QVisionError, match="not a valid ONNX"):
        load_model(text)
    with pytest.raises(QVisionError, match="folder"):
        load_model(tmp_path)


def test_checker_failure_is_reported(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.graph.node[0].input[0] = "undefined_tensor"
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    with pytest.raises(QVisionError, match="checker"):
        load_model(path)


def _constant_model(opset: int) -> onnx.ModelProto:
    """y = x * c + d, where c and d come from Constant nodes (as in the PP-OCR exports)."""
    c = helper.make_node(
        "Constant", [], ["c"], value=numpy_helper.from_array(np.full((1, 4), 2.0, np.float32))
    )
    # value_float needs opset 12; older models carry scalars as 'value' tensors
    d = (
        helper.make_node("Constant", [], ["d"], value_float=0.5)
        if opset >= 12
        else helper.make_node(
            "Constant", [], ["d"], value=numpy_helper.from_array(np.array(0.5, np.float32))
        )
    )
    nodes = [
        c,
        d,
        helper.make_node("Mul", ["x", "c"], ["m"]),
        helper.make_node("Add", ["m", "d"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


def test_constants_become_initializers_and_outputs_do_not_change(tmp_path):
    model = _constant_model(13)
    path = tmp_path / "c.onnx"
    onnx.save(model, str(path))
    norm = load_model(path)
    assert [n.op_type for n in norm.graph.node] == ["Mul", "Add"]
    assert {t.name for t in norm.graph.initializer} == {"c", "d"}
    x = np.arange(4, dtype=np.float32).reshape(1, 4)

    def run(m):
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {"x": x})[0]

    assert np.array_equal(run(model), run(norm))
    assert constants_to_initializers(norm) == 0


def test_old_opset_is_upgraded_to_13(tmp_path):
    model = _constant_model(11)
    path = tmp_path / "old.onnx"
    onnx.save(model, str(path))
    assert default_opset(load_model(path)) == 13


@pytest.mark.parametrize(
    ("shape", "dtype", "problem"),
    [
        ([1, 10], TensorProto.FLOAT, "expected an image tensor"),
        ([1, 3, 32, 32], TensorProto.INT64, "expected a float image tensor"),
        ([1, 5, 32, 7], TensorProto.FLOAT, "not an image tensor"),
    ],
)
def test_non_image_inputs_are_named(tmp_path, shape, dtype, problem):
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", dtype, shape)],
        [helper.make_tensor_value_info("y", dtype, shape)],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(QVisionError, match=problem) as exc:
        image_input(load_model(path), path)
    assert str(path) in str(exc.value) and "'x'" in str(exc.value)


def test_nhwc_input_is_recognized(tmp_path):
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64, 48, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64, 48, 3])],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    inp = image_input(load_model(path))
    assert (inp.layout, inp.channels, inp.height, inp.width) == ("nhwc", 3, 64, 48)
