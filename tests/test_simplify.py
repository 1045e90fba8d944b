"""Exact normalization of what exporters leave: each pattern keeps the float outputs within
1e-5 and leaves a graph that quantizes with every Conv fused."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qvision import api
from qvision.errors import QVisionError
from qvision.model import load_model
from qvision.model.graph import node_attr
from qvision.model.rewrite import prepare_for_quantization
from qvision.model.simplify import drop_identities, fold_pads
from qvision.zoo.torch_models import export_file

from conftest import TINY_PRE

RNG = np.random.default_rng(0)
SHAPE_OPS = {"Shape", "Gather", "ConstantOfShape", "Cast", "Pad", "Slice", "Transpose", "Unsqueeze"}


def _run(model: onnx.ModelProto | str, x: np.ndarray) -> list[np.ndarray]:
    data = model if isinstance(model, str) else model.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


def _same_outputs(path, model: onnx.ModelProto, x: np.ndarray) -> None:
    for a, b in zip(_run(str(path), x), _run(model, x), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def _ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


def _init(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _model(nodes, inits, out_shape, opset=17, in_shape=("N", 3, 16, 16)) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape)],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    m.metadata_props.add(key="qvision.preprocess", value=TINY_PRE.to_json())
    return m


def _conv_w(cout: int, cin: int, k: int = 3) -> np.ndarray:
    return (RNG.standard_normal((cout, cin, k, k)) * 0.3).astype(np.float32)


# -- exports made the usual ways -----------------------------------------------------------
torch = pytest.importorskip("torch")


class SamePadNet(torch.nn.Module):
    """EfficientNet-style: "same" padding with F.pad, depthwise conv, x.view(x.size(0), -1)."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.dw = torch.nn.Conv2d(8, 8, 3, groups=8)
        self.pw = torch.nn.Conv2d(8, 16, 1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        x = torch.nn.functional.pad(x, [0, 1, 0, 1])  # TF "same" for stride 2
        x = torch.clamp(self.stem(x), 0, 6)
        x = torch.clamp(self.dw(torch.nn.functional.pad(x, [1, 1, 1, 1])), 0, 6)
        x = torch.nn.functional.adaptive_avg_pool2d(self.pw(x), 1)
        return self.fc(x.view(x.size(0), -1))


def _export(tmp_path, exporter: str, dynamic: bool, external: bool):
    torch.manual_seed(0)
    path = tmp_path / f"{exporter}-{'dyn' if dynamic else 'fix'}-{int(external)}.onnx"
    # the tiny weights are under onnx's 1 KB threshold: every tensor goes out
    export_file(SamePadNet().eval(), path, exporter, dynamic, 32, 0 if external else None)
    model = onnx.load(str(path), load_external_data=False)
    model.metadata_props.add(key="qvision.preprocess", value=TINY_PRE.to_json())
    onnx.save(model, str(path))  # the data file stays where it is
    return path


@pytest.mark.parametrize(
    ("exporter", "dynamic", "external"),
    [
        ("torchscript", False, False),
        ("torchscript", True, False),
        ("torchscript", True, True),
        ("dynamo", True, False),
    ],
)
def test_exports_normalize_exactly_and_quantize_fully(
    tmp_path, flat_dir, exporter, dynamic, external
):
    path = _export(tmp_path, exporter, dynamic, external)
    raw = onnx.load(str(path), load_external_data=False)
    model = load_model(path)
    assert not (_ops(model) & SHAPE_OPS), _ops(model)
    x = RNG.standard_normal((2 if dynamic else 1, 3, 32, 32)).astype(np.float32)
    _same_outputs(path, model, x)
    out = tmp_path / "int8.onnx"
    res = api.quantize(path, out, flat_dir)
    assert res.float_nodes == {}, res.float_nodes
    layers = sum(n.op_type in ("Conv", "Gemm") for n in model.graph.node)
    assert layers == 4 and res.quantized_nodes >= layers
    # the input file (and its data file) are untouched
    assert onnx.load(str(path), load_external_data=False) == raw
    if dynamic:  # the batch stays dynamic
        q = _run(str(out), x)[0]
        assert q.shape == (2, 10)


def test_torchscript_export_is_as_fast_a_graph_as_the_dynamo_one(tmp_path, flat_dir):
    """The quantized graphs ONNX Runtime builds from both exports run the same kernels."""
    kinds = []
    for exporter in ("torchscript", "dynamo"):
        path = _export(tmp_path, exporter, True, False)
        out = tmp_path / f"{exporter}.int8.onnx"
        api.quantize(path, out, flat_dir)
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(tmp_path / f"{exporter}.opt.onnx")
        ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])
        ops = _ops(onnx.load(opts.optimized_model_filepath))
        assert "QLinearConv" in ops and "Conv" not in ops and "Pad" not in ops, ops
        kinds.append(ops - {"Transpose", "Reshape", "Flatten"})
    assert kinds[0] == kinds[1]


@pytest.mark.parametrize(
    ("learned", "kwargs"),
    [
        ("brecq", {"weights": "int4", "algo_options": {"brecq": {"iters": 5, "views": 1}}}),
        ("adaround", {"algos": ["adaround"], "algo_options": {"adaround": {"iters": 5}}}),
    ],
)
def test_learned_rounding_runs_on_a_torchscript_export(tmp_path, flat_dir, learned, kwargs):
    """brecq translates the normalized graph to PyTorch: nothing of the run-time padding
    subgraph is left for it to refuse."""
    path = _export(tmp_path, "torchscript", True, False)
    plan = tmp_path / "plan.json"
    res = api.quantize(path, tmp_path / "out.onnx", flat_dir, plan_out=plan, **kwargs)
    assert res.float_nodes == {}
    saved = json.loads(plan.read_text())
    assert learned in saved["algorithms"] and saved["weight_rounding"]


# -- one pattern at a time ------------------------------------------------------------------
def test_constant_subgraphs_fold_and_big_fills_stay_nodes(tmp_path):
    """Weight computed by Transpose(Cast(w16)); a ConstantOfShape filling an image-sized
    tensor is a node still (it would bloat the file), its small shape input folds."""
    w16 = _conv_w(4, 3).transpose(1, 0, 2, 3).astype(np.float16)
    nodes = [
        helper.make_node("Cast", ["w16"], ["w32"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["w32"], ["w"], perm=[1, 0, 2, 3]),
        helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["one", "fill_rest"], ["fill_shape"], axis=0),
        helper.make_node(
            "ConstantOfShape", ["fill_shape"], ["fill"], value=_init("v", np.float32([0.5]))
        ),
        helper.make_node("Add", ["c", "fill"], ["out"]),
    ]
    inits = [
        _init("w16", w16),
        _init("one", np.array([1], np.int64)),
        _init("fill_rest", np.array([4, 160, 160], np.int64)),
    ]
    m = _model(nodes, inits, ["N", 4, 160, 160], in_shape=("N", 3, 160, 160))
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    loaded = load_model(path)
    assert _ops(loaded) == {"Conv", "ConstantOfShape", "Add"}
    assert any(t.name == "fill_shape" for t in loaded.graph.initializer)
    _same_outputs(path, loaded, RNG.standard_normal((2, 3, 160, 160)).astype(np.float32))


def test_reshape_by_computed_batch_copies_the_dim(tmp_path):
    """x.view(x.size(0), -1) with a dynamic batch: Reshape's target becomes [0, -1]."""
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["g"]),
        helper.make_node("Shape", ["input"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["g", "target"], ["out"]),
    ]
    inits = [
        _init("zero", np.array(0, np.int64)),
        _init("axes", np.array([0], np.int64)),
        _init("minus_one", np.array([-1], np.int64)),
    ]
    m = _model(nodes, inits, ["N", 3])
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    loaded = load_model(path)
    assert _ops(loaded) == {"GlobalAveragePool", "Reshape"}
    reshape = next(n for n in loaded.graph.node if n.op_type == "Reshape")
    target = next(t for t in loaded.graph.initializer if t.name == reshape.input[1])
    assert numpy_helper.to_array(target).tolist() == [0, -1]
    for n in (1, 3):
        _same_outputs(path, loaded, RNG.standard_normal((n, 3, 16, 16)).astype(np.float32))


def test_shape_of_fixed_dims_folds_with_a_dynamic_batch(tmp_path):
    """Pads computed from H and W (Shape -> Slice -> arithmetic) fold even though the batch
    is dynamic; the Pad then folds into the Conv."""
    nodes = [
        helper.make_node("Shape", ["input"], ["s"]),
        helper.make_node("Slice", ["s", "two", "four"], ["hw"]),
        helper.make_node("Mod", ["hw", "two_i"], ["odd"]),  # 16 % 2 = 0 -> pads 0, +1
        helper.make_node("Add", ["odd", "one_i"], ["end"]),
        helper.make_node("Concat", ["zeros4", "end_nc", "end"], ["pads"], axis=0),
        helper.make_node("Pad", ["input", "pads"], ["p"], mode="constant"),
        helper.make_node("Conv", ["p", "w"], ["out"], strides=[2, 2]),
    ]
    inits = [
        _init("two", np.array([2], np.int64)),
        _init("four", np.array([4], np.int64)),
        _init("two_i", np.array([2, 2], np.int64)),
        _init("one_i", np.array([1, 1], np.int64)),
        _init("zeros4", np.zeros(4, np.int64)),
        _init("end_nc", np.zeros(2, np.int64)),
        _init("w", _conv_w(4, 3)),
    ]
    m = _model(nodes, inits, ["N", 4, 8, 8])
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    loaded = load_model(path)
    assert _ops(loaded) == {"Conv"}
    assert node_attr(loaded.graph.node[0], "pads") == [0, 0, 1, 1]
    _same_outputs(path, loaded, RNG.standard_normal((3, 3, 16, 16)).astype(np.float32))


@pytest.mark.parametrize(
    ("reader", "attrs", "value", "pads", "folds"),
    [
        ("Conv", {}, 0.0, [0, 0, 1, 2, 0, 0, 2, 1], True),
        ("Conv", {"pads": [1, 1, 1, 1]}, 0.0, [0, 0, 1, 1, 0, 0, 1, 1], True),
        ("AveragePool", {"kernel_shape": [3, 3]}, 0.0, [0, 0, 1, 1, 0, 0, 1, 1], True),
        ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, 0.0, [0, 0, 1, 1, 0, 0, 1, 1], False),
        ("Conv", {}, 1.0, [0, 0, 1, 1, 0, 0, 1, 1], False),  # the border is not zero
        ("Conv", {}, 0.0, [0, 0, -1, 0, 0, 0, 0, 0], False),  # a crop
        ("Conv", {}, 0.0, [0, 1, 0, 0, 0, 0, 0, 0], False),  # pads channels
        ("MaxPool", {"kernel_shape": [3, 3]}, 0.0, [0, 0, 1, 1, 0, 0, 1, 1], False),
    ],
)  # fmt: skip
def test_pad_folds_into_its_reader_only_when_exact(tmp_path, reader, attrs, value, pads, folds):
    cin = 4 if pads[1] else 3
    ins = ["p", "w"] if reader == "Conv" else ["p"]
    nodes = [
        helper.make_node("Pad", ["input", "pads", "value"], ["p"], mode="constant"),
        helper.make_node(reader, ins, ["out"], **attrs),
    ]
    inits = [
        _init("pads", np.array(pads, np.int64)),
        _init("value", np.array(value, np.float32)),
        _init("w", _conv_w(5, cin)),
    ]
    m = _model(nodes, inits, None)
    del m.graph.output[0].type.tensor_type.shape.dim[:]
    m.graph.output[0].type.tensor_type.ClearField("shape")
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    loaded = load_model(path)
    assert ("Pad" not in _ops(loaded)) == folds
    _same_outputs(path, loaded, RNG.standard_normal((2, 3, 16, 16)).astype(np.float32))


def test_pad_read_by_another_op_stays():
    nodes = [
        helper.make_node("Pad", ["input", "pads"], ["p"]),
        helper.make_node("Conv", ["p", "w"], ["c"]),
        helper.make_node("Relu", ["p"], ["r"]),
    ]
    m = _model(nodes, [_init("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))], None)
    assert fold_pads(m) == 0


def test_identity_chains_and_inference_dropout_go(tmp_path):
    w = _conv_w(4, 3)
    nodes = [
        helper.make_node("Identity", ["input"], ["i1"]),
        helper.make_node("Identity", ["i1"], ["i2"]),
        helper.make_node("Conv", ["i2", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Dropout", ["c"], ["d"]),
        helper.make_node("Relu", ["d"], ["r"]),
        helper.make_node("Identity", ["r"], ["out"]),  # the graph output keeps its name
    ]
    m = _model(nodes, [_init("w", w)], ["N", 4, 16, 16])
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    loaded = load_model(path)
    assert _ops(loaded) == {"Conv", "Relu"}
    assert loaded.graph.output[0].name == "out"
    _same_outputs(path, loaded, RNG.standard_normal((2, 3, 16, 16)).astype(np.float32))


def test_identity_from_input_to_output_stays():
    m = _model([helper.make_node("Identity", ["input"], ["out"])], [], ["N", 3, 16, 16])
    assert drop_identities(m) == 0


# -- paddle2onnx-style models -----------------------------------------------------------------
def _paddle_style(path, opset: int = 11) -> None:
    """What paddle2onnx writes at opset 11: weights as Constant nodes, Identity chains,
    x * HardSigmoid(x) for HardSwish, a Conv + Mul/Add affine, an output without a shape."""
    w1, w2 = _conv_w(8, 3), _conv_w(8, 8, 1)

    def const(name, value):
        return helper.make_node("Constant", [], [name], value=_init(name + "_v", value))

    nodes = [
        const("w1", w1),
        const("w2", w2),
        const("k", np.full((1, 8, 1, 1), 1.5, np.float32)),
        const("c", np.full((1, 8, 1, 1), -0.2, np.float32)),
        helper.make_node("Identity", ["input"], ["x0"]),
        helper.make_node("Conv", ["x0", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Mul", ["c1", "k"], ["m1"]),
        helper.make_node("Add", ["m1", "c"], ["a1"]),
        helper.make_node("Identity", ["a1"], ["a2"]),
        helper.make_node("HardSigmoid", ["a2"], ["hs"], alpha=0.1666667, beta=0.5),
        helper.make_node("Mul", ["a2", "hs"], ["h1"]),
        helper.make_node("Identity", ["h1"], ["h2"]),
        helper.make_node("Conv", ["h2", "w2"], ["c2"]),
        helper.make_node("HardSigmoid", ["c2"], ["gate"], alpha=0.2, beta=0.5),  # SE gate stays
        helper.make_node("Mul", ["h2", "gate"], ["g1"]),
        helper.make_node("Identity", ["g1"], ["out"]),
    ]
    out = onnx.ValueInfoProto()
    out.name = "out"
    out.type.tensor_type.elem_type = TensorProto.FLOAT  # no shape, as paddle2onnx writes it
    graph = helper.make_graph(
        nodes,
        "paddle",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["p2o.N", 3, 32, 32])],
        [out],
    )
    graph.input[0].name = "input"
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 6
    m.metadata_props.add(key="qvision.preprocess", value=TINY_PRE.to_json())
    onnx.save(m, str(path))


def test_paddle2onnx_style_model_quantizes_as_given(tmp_path, flat_dir):
    path = tmp_path / "paddle.onnx"
    _paddle_style(path)
    loaded = load_model(path)
    assert "Identity" not in _ops(loaded)
    assert loaded.graph.output[0].type.tensor_type.HasField("shape")
    x = RNG.standard_normal((2, 3, 32, 32)).astype(np.float32)
    _same_outputs(path, loaded, x)
    prepared = prepare_for_quantization(loaded)
    ops = [n.op_type for n in prepared.graph.node]
    assert ops.count("HardSwish") == 1 and ops.count("HardSigmoid") == 1, ops
    assert "Add" not in ops  # the affine folded into the first Conv
    _same_outputs(path, prepared, x)
    out = tmp_path / "paddle.int8.onnx"
    res = api.quantize(path, out, flat_dir)
    assert res.quantized_nodes >= 2
    q, f = _run(str(out), x)[0], _run(str(path), x)[0]
    assert q.shape == f.shape
    assert np.corrcoef(q.ravel(), f.ravel())[0, 1] > 0.97  # a broken graph gives ~0


def _reshape_by_computed_target(path, computed_from_shape: bool) -> None:
    """Output declared without a shape, produced by a Reshape whose target ONNX's inference
    cannot evaluate (a Div); from constants ONNX Runtime folds it, from a dynamic width not."""
    first = (
        [helper.make_node("Shape", ["input"], ["s"]), helper.make_node("Gather", ["s", "three"], ["w"], axis=0)]
        if computed_from_shape
        else []
    )  # fmt: skip
    nodes = [
        *first,
        helper.make_node("Div", ["w" if computed_from_shape else "twelve", "four"], ["t"]),
        helper.make_node("Unsqueeze", ["t"], ["t1"], axes=[0]),
        helper.make_node("Concat", ["zero", "t1", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["input", "target"], ["out"]),
    ]
    inits = [
        _init("three", np.array(3, np.int64)),
        _init("twelve", np.array(12, np.int64)),
        _init("four", np.array(4, np.int64)),
        _init("zero", np.array([0], np.int64)),
        _init("minus_one", np.array([-1], np.int64)),
    ]
    out = onnx.ValueInfoProto()
    out.name = "out"
    out.type.tensor_type.elem_type = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 48, "W"])],
        [out],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    m.ir_version = 6
    onnx.save(m, str(path))


def test_output_shape_from_onnx_runtime_when_onnx_cannot_infer_it(tmp_path):
    path = tmp_path / "m.onnx"
    _reshape_by_computed_target(path, computed_from_shape=False)
    loaded = load_model(path)
    dims = loaded.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value or d.dim_param for d in dims][:2] == ["N", 3] and len(dims) == 3
    _same_outputs(path, loaded, RNG.standard_normal((2, 3, 48, 40)).astype(np.float32))


def test_output_shape_nobody_can_infer_is_a_clear_error(tmp_path):
    path = tmp_path / "m.onnx"
    _reshape_by_computed_target(path, computed_from_shape=True)
    with pytest.raises(QVisionError, match="output 'out' is declared without a shape"):
        load_model(path)


def test_normalize_leaves_no_file_when_the_result_is_invalid(tmp_path):
    """A model ONNX Runtime cannot load after normalization is refused, and nothing is written."""
    nodes = [
        helper.make_node("Relu", ["input"], ["r"]),
        helper.make_node("NoSuchOp", ["r"], ["out"], domain="qv.test"),
    ]
    m = _model(nodes, [], ["N", 3, 16, 16])
    m.opset_import.append(helper.make_opsetid("qv.test", 1))
    path = tmp_path / "bad.onnx"
    onnx.save(m, str(path))
    out = tmp_path / "norm.onnx"
    with pytest.raises(Exception) as err:
        api.normalize(path, out)
    assert "onnxruntime" in str(err.value)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.onnx"]
