"""Model sizes count external-data files, wherever a size is reported."""

import hashlib
import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import convert_model_to_external_data

from qvision import api
from qvision.model.load import external_data_files, model_size
from qvision.report.html import ReportInputs, write_report

from conftest import tiny_classifier


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _external(src, path, **kw):
    """Re-save ``src`` with every tensor in external data beside ``path``."""
    onnx.save_model(
        onnx.load(str(src)), str(path), save_as_external_data=True, size_threshold=0, **kw
    )
    return path


def test_quantize_reports_input_size_with_its_external_data(tmp_path, flat_dir):
    folder = tmp_path / "m"
    folder.mkdir()
    src = _external(
        tiny_classifier(tmp_path / "t.onnx"),
        folder / "t.onnx",
        all_tensors_to_one_file=True,
        location="w.bin",
    )
    data = folder / "w.bin"
    out = tmp_path / "q.onnx"
    res = api.quantize(src, out, flat_dir)
    assert res.size_bytes["input"] == src.stat().st_size + data.stat().st_size
    # qvision writes one self-contained file
    assert external_data_files(out) == []
    assert res.size_bytes["output"] == out.stat().st_size
    m = json.loads((tmp_path / "q.manifest.json").read_text())
    assert m["input_model"]["sha256"] == _sha(src)
    assert m["input_model"]["size_bytes"] == res.size_bytes["input"]
    assert m["input_model"]["external_data"] == [
        {
            "path": str(data),
            "sha256": _sha(data),
            "size_bytes": data.stat().st_size,
            "external_data": [],
        }
    ]
    assert m["output_model"]["external_data"] == []
    page = write_report(ReportInputs(manifest=m), tmp_path / "report").read_text()
    assert f"external data {data} — sha256 {_sha(data)}" in page


def test_size_counts_attribute_and_subgraph_tensors_once_per_file(tmp_path):
    """A Constant node's tensor and one inside an If branch are external data too."""
    big = numpy_helper.from_array(np.ones((64, 64), np.float32), "c")
    sub = numpy_helper.from_array(np.full((64, 64), 2.0, np.float32), "s")
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["b"], value=sub)],
        "branch",
        [],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [64, 64])],
    )
    nodes = [
        helper.make_node("Constant", [], ["c"], value=big),
        helper.make_node("If", ["cond"], ["i"], then_branch=branch, else_branch=branch),
        helper.make_node("Add", ["c", "i"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 64])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    one, many = tmp_path / "one", tmp_path / "many"
    for folder, location in ((one, "w.bin"), (many, None)):
        folder.mkdir()
        m = onnx.ModelProto.FromString(model.SerializeToString())  # converted in place
        convert_model_to_external_data(
            m, bool(location), location, size_threshold=0, convert_attribute=True
        )
        onnx.save_model(m, str(folder / "m.onnx"))
    for folder in (one, many):
        files = sorted(p for p in folder.iterdir() if p.suffix != ".onnx")
        assert files and sorted(external_data_files(folder / "m.onnx")) == files
        assert model_size(folder / "m.onnx") == sum(p.stat().st_size for p in folder.iterdir())
    # both branches' tensors are named "s": one file "s" holds both, counted once
    assert [p.name for p in external_data_files(many / "m.onnx")] == ["c", "s"]
