"""PTQ end to end on tiny models: plan, writer, ORT fusion, and the plan simulated in numpy."""

import collections
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from qvision import api
from qvision.data import PRESETS, image_folder, iter_batches
from qvision.errors import QVisionError
from qvision.qmath import dequantize, fake_quantize, quantize_bias
from qvision.quant.plan import QuantPlan
from qvision.targets import TARGETS, detect

from conftest import run_cli
from qdq_models import PRE16, lcnet_block, mobile_block, op_zoo


@pytest.fixture
def calib_dir(flat_dir):
    return flat_dir


def _save(model, path):
    onnx.save(model, str(path))
    return path


def _ort(path_or_bytes, x, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL, optimized=None):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    if optimized:
        opts.optimized_model_filepath = str(optimized)
    src = path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    sess = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})


def _inputs(calib_dir):
    return next(iter_batches(image_folder(calib_dir), PRE16, batch_size=4)).inputs


def _simulate_mobile_block(model, plan: QuantPlan, x):
    """The plan applied by hand with qvision.qmath and torch's float ops."""
    init = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    acts, wts = plan.activations, plan.weights

    def fq(t, name):
        s, z = acts[name].arrays()
        return torch.from_numpy(fake_quantize(t.numpy(), s, z, acts[name].format))

    def w(name):
        spec = wts[name]
        s, z = spec.arrays()
        return torch.from_numpy(fake_quantize(init[name], s, z, spec.format, spec.axis))

    def b(name, x_name, w_name):
        q, s = quantize_bias(init[name], float(acts[x_name].arrays()[0]), wts[w_name].arrays()[0])
        return torch.from_numpy(dequantize(q, s, np.zeros(s.shape, np.int64), axis=0))

    t = fq(torch.from_numpy(x), "input")
    r1 = fq(torch.relu(F.conv2d(t, w("w1"), b("b1", "input", "w1"), padding=1)), "r1")
    r2 = fq(
        torch.clamp(F.conv2d(r1, w("w2"), b("b2", "r1", "w2"), padding=1, groups=8), 0, 6), "r2"
    )
    c3 = fq(F.conv2d(r2, w("w3"), b("b3", "r2", "w3")), "c3")
    r3 = fq(torch.relu(c3 + r1), "r3")
    return F.max_pool2d(r3, 2).numpy()


@pytest.mark.parametrize("target", ["ort-cpu-avx2", "ort-cpu-vnni"])
def test_fused_ort_output_equals_numpy_simulation(tmp_path, calib_dir, target):
    src = _save(mobile_block(), tmp_path / "block.onnx")
    out, plan_path = tmp_path / "q.onnx", tmp_path / "plan.json"
    res = api.quantize(
        src, out, calib_dir, target=target, method="minmax", plan_out=plan_path, algos="none"
    )
    plan = QuantPlan.load(plan_path)
    assert (
        res.quantized_nodes == 5 and res.float_nodes == {}
    )  # 3 Conv, Add, MaxPool; Relu/Clip folded
    assert set(plan.activations) == {"input", "r1", "r2", "c3", "r3"}
    assert plan.nodes["relu1"].action == "fold" and plan.nodes["clip"].action == "fold"
    bits = {k: v.bits for k, v in plan.weights.items()}
    assert bits == (
        {"w1": 7, "w2": 8, "w3": 7} if target == "ort-cpu-avx2" else {"w1": 8, "w2": 8, "w3": 8}
    )
    x = _inputs(calib_dir)
    sim = _simulate_mobile_block(onnx.load(str(src)), plan, x)
    step = plan.activations["r3"].scale[0]
    levels = [ort.GraphOptimizationLevel.ORT_DISABLE_ALL]
    # Fused integer kernels match too, except full 8-bit weights on a CPU without VNNI:
    # there the u8s8 kernel saturates, which is exactly what the avx2 profile avoids.
    if target == "ort-cpu-avx2" or detect()[0].name == "ort-cpu-vnni":
        levels.append(ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    for level in levels:
        got = _ort(out, x, level)[0]
        assert np.abs(got - sim).max() <= step * 1.001, level
    # and the runtime really fused it: integer kernels, no leftover Q/DQ but the input's
    _ort(out, x, optimized=tmp_path / "opt.onnx")
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    assert ops["QLinearConv"] == 3 and ops["QLinearAdd"] == 1
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 1
    assert "Relu" not in ops and "Clip" not in ops


def test_every_op_in_the_table_is_written_and_fused(tmp_path, calib_dir):
    src = _save(op_zoo(), tmp_path / "zoo.onnx")
    out = tmp_path / "q.onnx"
    res = api.quantize(
        src, out, calib_dir, target="ort-cpu-avx2", method="minmax", plan_out=tmp_path / "p.json"
    )
    plan = QuantPlan.load(tmp_path / "p.json")
    q = onnx.load(str(out))
    onnx.checker.check_model(q)
    assert res.float_nodes == {"HardSwish": 1}
    assert any("HardSwish" in w for w in res.warnings)
    quantized_ops = {plan.nodes[n].op_type for n in plan.quantized_nodes()}
    table = set(TARGETS["ort-cpu-avx2"].ops)
    assert table - quantized_ops == {"Add", "MaxPool"}  # both covered by mobile_block
    # Concat shares one scale across inputs and output
    assert plan.activations["rs"] == plan.activations["c2"] == plan.activations["cat"]
    x = _inputs(calib_dir)
    f_out, f_probs = _ort(src, x)
    q_out, q_probs = _ort(out, x, optimized=tmp_path / "opt.onnx")
    assert np.abs(q_out - f_out).max() < 0.1 * np.abs(f_out).max() + 0.05
    assert np.abs(q_probs - f_probs).max() < 0.05
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    # only the input Q and the DQs in front of float consumers (HardSwish, outputs) remain
    assert ops["QuantizeLinear"] == 1, ops
    assert ops["DequantizeLinear"] <= 2, ops
    for fused in (
        "QLinearConv",
        "QLinearMul",
        "QLinearSigmoid",
        "QLinearLeakyRelu",
        "QLinearAveragePool",
        "QLinearConcat",
        "QLinearGlobalAveragePool",
        "QGemm",
    ):
        assert ops[fused] >= 1, (fused, ops)


@pytest.mark.parametrize("spelled", [True, False])
def test_conv_before_float_ops_still_runs_integer(tmp_path, calib_dir, spelled):
    """The scalar affine folds into conv1 and the spelled-out HardSwish becomes one op
    (both exact), and conv1's output gets a Q so ONNX Runtime runs it as QLinearConv
    although HardSwish, which reads it, stays float."""
    from qvision.model.rewrite import prepare_for_quantization

    model = lcnet_block(spelled=spelled)
    prepared = prepare_for_quantization(model)
    assert [n.op_type for n in prepared.graph.node] == ["Conv", "HardSwish", "Conv"]
    x = _inputs(calib_dir)
    src, folded = _save(model, tmp_path / "m.onnx"), _save(prepared, tmp_path / "f.onnx")
    np.testing.assert_allclose(_ort(folded, x)[0], _ort(src, x)[0], rtol=1e-5, atol=1e-5)
    out = tmp_path / "q.onnx"
    api.quantize(src, out, calib_dir, method="minmax")
    f, q = _ort(src, x)[0], _ort(out, x, optimized=tmp_path / "opt.onnx")[0]
    assert np.abs(q - f).max() < 0.1 * np.abs(f).max()
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    assert ops["QLinearConv"] == 1 and ops["Conv"] == 1, ops  # conv2 makes the float output


def test_only_per_channel_affines_fold_into_convs(tmp_path, calib_dir):
    from onnx import numpy_helper

    from qvision.model.rewrite import fold_conv_affines

    model = lcnet_block(spelled=False)
    inits = {t.name: t for t in model.graph.initializer}
    per_channel = np.linspace(0.5, 2, 8, dtype=np.float32).reshape(1, 8, 1, 1)
    inits["a"].CopyFrom(numpy_helper.from_array(per_channel, "a"))
    spatial = np.linspace(-1, 1, 256, dtype=np.float32).reshape(1, 1, 16, 16)
    inits["c"].CopyFrom(numpy_helper.from_array(spatial, "c"))  # varies over H, W: stays
    x = _inputs(calib_dir)
    before = _ort(model.SerializeToString(), x)[0]
    stats = {"c1": (np.zeros(8, np.float32), np.ones(8, np.float32))}
    assert fold_conv_affines(model, stats) == 1
    assert [n.op_type for n in model.graph.node] == ["Conv", "Add", "HardSwish", "Conv"]
    np.testing.assert_allclose(_ort(model.SerializeToString(), x)[0], before, rtol=1e-5, atol=1e-5)
    (name,) = stats  # the statistics moved to the folded output, scaled per channel
    assert name == "m1" and np.allclose(stats[name][1], per_channel.ravel())


@pytest.mark.parametrize("pads", [0, 1])
def test_affine_folds_into_the_next_conv_only_without_padding(calib_dir, pads):
    from onnx import helper

    from qvision.model.rewrite import fold_affines_into_next_conv

    from qdq_models import graph_model

    r = np.random.default_rng(3)
    inits = {
        "a": r.uniform(0.5, 2, (1, 3, 1, 1)).astype(np.float32),
        "c": r.uniform(-1, 1, (1, 3, 1, 1)).astype(np.float32),
        "w": r.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "b": r.standard_normal(4).astype(np.float32),
    }
    nodes = [
        helper.make_node("Mul", ["input", "a"], ["m"], name="scale"),
        helper.make_node("Add", ["m", "c"], ["y"], name="shift"),
        helper.make_node("Conv", ["y", "w", "b"], ["out"], pads=[pads] * 4, name="conv"),
    ]
    model = graph_model(nodes, inits, ["N", 4, 14 + 2 * pads, 14 + 2 * pads])
    x = _inputs(calib_dir)
    before = _ort(model.SerializeToString(), x)[0]
    assert fold_affines_into_next_conv(model) == (1 - pads)  # padding would see c, not 0
    assert len(model.graph.node) == (1 if not pads else 3)
    np.testing.assert_allclose(_ort(model.SerializeToString(), x)[0], before, rtol=1e-4, atol=1e-4)


def test_concat_of_boxes_and_scores_keeps_the_scores(tmp_path, calib_dir):
    """A YOLO-style head joins pixel boxes (hundreds) with 0-1 scores; a shared Concat scale
    would leave the scores ~3 levels, so that Concat stays float."""
    from onnx import helper

    from qdq_models import graph_model

    r = np.random.default_rng(4)
    inits = {
        "w": (r.standard_normal((8, 3, 3, 3)) * 0.4).astype(np.float32),
        "wb": (r.standard_normal((4, 8, 1, 1)) * 100).astype(np.float32),
        "ws": r.standard_normal((2, 8, 1, 1)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["f"], pads=[1, 1, 1, 1], name="stem"),
        helper.make_node("Relu", ["f"], ["fr"], name="relu"),
        helper.make_node("Conv", ["fr", "wb"], ["boxes"], name="box_head"),
        helper.make_node("Conv", ["fr", "ws"], ["logits"], name="cls_head"),
        helper.make_node("Sigmoid", ["logits"], ["scores"], name="sigmoid"),
        helper.make_node("Concat", ["boxes", "scores"], ["out"], axis=1, name="concat"),
    ]
    src = _save(graph_model(nodes, inits, ["N", 6, 16, 16]), tmp_path / "head.onnx")
    out, plan_path = tmp_path / "q.onnx", tmp_path / "p.json"
    # min/max: no clipping of the shared stem, so the error left is the Concat's
    api.quantize(src, out, calib_dir, method="minmax", plan_out=plan_path)
    plan = QuantPlan.load(plan_path)
    # the sigmoid and the concat are post-processing: float, each conv output its own grid
    assert plan.nodes["concat"].action == plan.nodes["sigmoid"].action == "float"
    assert plan.activations["boxes"] != plan.activations["logits"]
    x = _inputs(calib_dir)
    f, q = _ort(src, x)[0], _ort(out, x)[0]
    assert np.abs(q[:, 4:] - f[:, 4:]).max() < 0.06  # scores (shared scale: ~8 per step)
    assert np.abs(q[:, :4] - f[:, :4]).max() < 0.02 * np.abs(f[:, :4]).max()  # boxes


@pytest.mark.parametrize("target", ["tensorrt", "openvino", "openvino-vnni"])
def test_other_targets_write_valid_models(tmp_path, calib_dir, target):
    src = _save(mobile_block(), tmp_path / "b.onnx")
    out = tmp_path / "q.onnx"
    # min/max ranges: no clipping, so the worst element bounds the grid error
    api.quantize(src, out, calib_dir, target=target, method="minmax", plan_out=tmp_path / "p.json")
    plan = QuantPlan.load(tmp_path / "p.json")
    if target == "tensorrt":
        assert all(s.dtype == "int8" and s.zero_point == [0] for s in plan.activations.values())
    # OpenVINO's int8 kernels on AVX2 saturate like ONNX Runtime's: `openvino` keeps GEMM-backed
    # weights at 7 bits (depthwise at 8), `openvino-vnni` uses all 8
    bits = {w: plan.weights[w].bits for w in ("w1", "w2", "w3")}
    if target == "openvino":
        assert bits == {"w1": 7, "w2": 8, "w3": 7}
    elif target == "openvino-vnni":
        assert bits == {"w1": 8, "w2": 8, "w3": 8}
    x = _inputs(calib_dir)
    f = _ort(src, x)[0]
    # Reference semantics (no fusion): these models are meant for TensorRT/OpenVINO, not for
    # this CPU's ONNX Runtime kernels (openvino-vnni's 8-bit weights saturate them on AVX2).
    got = _ort(out, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)[0]
    assert np.abs(got - f).max() < 0.1 * np.abs(f).max()


def test_plan_round_trip_and_edit(tmp_path, calib_dir):
    src = _save(mobile_block(), tmp_path / "b.onnx")
    a, b, c, plan_path = (tmp_path / n for n in ("a.onnx", "b.onnx2", "c.onnx", "plan.json"))
    api.quantize(src, a, calib_dir, plan_out=plan_path)
    api.quantize(src, b, plan=plan_path)
    assert a.read_bytes() == b.read_bytes()
    data = json.loads(plan_path.read_text())
    data["nodes"]["pw"]["action"] = "float"
    plan_path.write_text(json.dumps(data))
    api.quantize(src, c, plan=plan_path)
    pw = next(n for n in onnx.load(str(c)).graph.node if n.name == "pw")
    assert pw.input[1] == "w3"  # float weight kept
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**data, "activations": {"r1": {"dtype": "int9"}}}))
    with pytest.raises(QVisionError, match="invalid plan"):
        api.quantize(src, tmp_path / "d.onnx", plan=bad)


def test_keep_float(tmp_path, calib_dir):
    src = _save(mobile_block(), tmp_path / "b.onnx")
    res = api.quantize(src, tmp_path / "q.onnx", calib_dir, keep_float=("dw",))
    assert res.float_nodes.get("Conv") == 1
    # ONNX Runtime quantizes a float Conv it finds between a per-tensor DQ and a Q itself
    # (per-tensor INT8 weights, WeightBiasQuantization); a layer kept float must stay float,
    # also in OpenVINO models (which OpenVINO runs in float either way) evaluated in ORT
    for target, keep in [("auto", "dw"), ("auto", "pw"), ("openvino", "dw")]:
        out = tmp_path / f"{target}-{keep}.onnx"
        api.quantize(src, out, calib_dir, keep_float=(keep,), target=target)
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(tmp_path / f"{target}-{keep}-ort.onnx")
        ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])
        ops = collections.Counter(
            n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node
        )
        assert ops["QLinearConv"] == 2, (keep, ops)
        assert ops["Conv"] + ops["FusedConv"] == 1, (keep, ops)
    # TensorRT takes per-channel scales on weights only (its profile's float_layer_dq): there
    # the float layer reads the shared DQ; a plan naming a target qvision does not know is
    # written for ONNX Runtime, which evaluates it
    api.quantize(
        src,
        tmp_path / "trt.onnx",
        calib_dir,
        keep_float=("dw",),
        target="tensorrt",
        plan_out=tmp_path / "trt.json",
    )
    plan = QuantPlan.load(tmp_path / "trt.json")
    plan.target = "my-runtime"
    api.quantize(src, tmp_path / "other.onnx", plan=plan.save(tmp_path / "other.json"))
    for name, per_channel in (("trt", False), ("other", True)):
        g = onnx.load(str(tmp_path / f"{name}.onnx")).graph
        dw = next(n for n in g.node if n.name == "dw")
        dq = next(n for n in g.node if n.output[0] == dw.input[0])
        assert any(a.name == "axis" for a in dq.attribute) == per_channel, name


def test_bad_inputs(tmp_path, calib_dir, tiny_model):
    src = _save(mobile_block(), tmp_path / "b.onnx")
    before = src.read_bytes()
    with pytest.raises(QVisionError, match="input file"):
        api.quantize(src, src, calib_dir)
    assert src.read_bytes() == before
    (tmp_path / "empty").mkdir()
    with pytest.raises(QVisionError, match="no images"):
        api.quantize(src, tmp_path / "q.onnx", tmp_path / "empty")
    with pytest.raises(QVisionError, match="224x224 images but input 'input' takes 16x16"):
        api.quantize(src, tmp_path / "q.onnx", calib_dir, preprocess="imagenet")
    qdq = tmp_path / "q.onnx"
    api.quantize(src, qdq, calib_dir)
    with pytest.raises(QVisionError, match="already contains QuantizeLinear"):
        api.quantize(qdq, tmp_path / "q2.onnx", calib_dir)
    assert not (tmp_path / "q2.onnx").exists()
    with pytest.raises(QVisionError, match="unknown target"):
        api.quantize(src, tmp_path / "q3.onnx", calib_dir, target="tpu")


def test_nan_activations_are_reported(tmp_path, calib_dir):
    model = mobile_block()
    for t in model.graph.initializer:
        if t.name == "b2":
            t.CopyFrom(onnx.numpy_helper.from_array(np.full(8, np.nan, np.float32), "b2"))
    src = _save(model, tmp_path / "nan.onnx")
    out = tmp_path / "q.onnx"
    with pytest.raises(QVisionError, match="NaN or Inf"):
        api.quantize(src, out, calib_dir)
    assert not out.exists()


def test_cli_quantize_with_eval(tmp_path, calib_dir, labelled_dir):
    from conftest import tiny_classifier

    src = tiny_classifier(tmp_path / "t.onnx")
    out, js = tmp_path / "q.onnx", tmp_path / "r.json"
    proc = run_cli(
        "quantize", src, "-o", out, "--calib", calib_dir, "--eval", labelled_dir, "--json", js
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(js.read_text())
    assert data["quantize"]["target"].startswith("ort-cpu")
    assert (
        set(data["int8"]["metrics"]) == {"top1", "top5"} and data["int8"]["agreement"] is not None
    )
    proc = run_cli("quantize", src, "-o", src, "--calib", calib_dir)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "input file" in proc.stderr
    assert PRESETS  # preset table importable alongside


def test_int4_weights_are_carried_in_int8(tmp_path, calib_dir):
    src = _save(mobile_block(), tmp_path / "b.onnx")
    out = tmp_path / "q4.onnx"
    res = api.quantize(
        src, out, calib_dir, weights="int4", plan_out=tmp_path / "p.json", algos="none"
    )
    plan = QuantPlan.load(tmp_path / "p.json")
    assert plan.weights_dtype == "int4" and res.weights == "int4"
    # the first and last weighted layers keep the target's bits (the published W4 convention)
    bits = {n: s.bits for n, s in plan.weights.items()}
    assert bits["w2"] == 4 and bits["w1"] > 4 and bits["w3"] > 4, bits
    # a name that is only its op and a counter ('conv1') gets its position and shape
    assert any(
        "first and last weighted layers (conv1 = Conv #1 3×3 3→8, pw)" in w for w in res.warnings
    )
    api.quantize(
        src,
        out,
        calib_dir,
        weights="int4",
        plan_out=tmp_path / "p.json",
        algos="none",
        layer_bits={"conv1": 4, "pw": 4},
    )
    assert {s.bits for s in QuantPlan.load(tmp_path / "p.json").weights.values()} == {4}
    q = onnx.load(str(out))
    weights = [
        t for t in q.graph.initializer if t.name.startswith("w") and t.name.endswith("_quantized")
    ]
    assert len(weights) == 3
    for t in weights:
        assert t.data_type == onnx.TensorProto.INT8
        vals = onnx.numpy_helper.to_array(t)
        assert vals.min() >= -8 and vals.max() <= 7 and vals.min() < -7  # whole int4 range
    x = _inputs(calib_dir)
    f = _ort(src, x)[0]
    assert np.abs(_ort(out, x)[0] - f).max() < 0.3 * np.abs(f).max()  # runs fused on any INT8 CPU
    with pytest.raises(QVisionError, match="unknown --weights"):
        api.quantize(src, tmp_path / "q5.onnx", calib_dir, weights="int3")


def test_int4_packed_stores_true_int4_with_the_same_values(tmp_path, calib_dir):
    src = _save(mobile_block(), tmp_path / "b.onnx")
    carried, packed = tmp_path / "c.onnx", tmp_path / "p.onnx"
    all4 = {"conv1": 4, "pw": 4}
    api.quantize(src, carried, calib_dir, weights="int4", algos="none", layer_bits=all4)
    res = api.quantize(src, packed, calib_dir, weights="int4-packed", algos="none", layer_bits=all4)
    assert res.weights == "int4-packed"
    q = onnx.load(str(packed))
    assert next(o.version for o in q.opset_import if o.domain == "") >= 21
    weights = {t.name: t for t in q.graph.initializer if t.name.endswith("_quantized")}
    w4 = [t for n, t in weights.items() if n.startswith("w")]
    assert len(w4) == 3 and all(t.data_type == onnx.TensorProto.INT4 for t in w4)
    # two values per byte
    assert all(len(t.raw_data) == (int(np.prod(t.dims)) + 1) // 2 for t in w4)
    ref = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(carried)).graph.initializer}
    for t in w4:
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(t).astype(np.int8), ref[t.name])
    x = _inputs(calib_dir)
    np.testing.assert_allclose(_ort(packed, x)[0], _ort(carried, x)[0], atol=1e-5)


def test_integer_tensors_are_never_quantized(tmp_path, calib_dir):
    """Shape arithmetic (int64 Add/Mul, as in exported OCR models) stays float-free of Q/DQ."""
    from onnx import TensorProto, helper

    m = mobile_block()
    m.graph.node.extend(
        [
            helper.make_node("Shape", ["input"], ["shp"], name="shape"),
            helper.make_node("Add", ["shp", "shp"], ["shp2"], name="int_add"),
        ]
    )
    m.graph.output.append(helper.make_tensor_value_info("shp2", TensorProto.INT64, [4]))
    src = _save(m, tmp_path / "b.onnx")
    api.quantize(src, tmp_path / "q.onnx", calib_dir, plan_out=tmp_path / "p.json")
    plan = QuantPlan.load(tmp_path / "p.json")
    assert plan.nodes["int_add"].action == "float"
    assert plan.nodes["int_add"].reason == "input is not float32"
    assert "shp" not in plan.activations
