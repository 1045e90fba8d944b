"""Cross-layer equalization, BatchNorm folding and analytical bias correction on tiny models."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from qvision import api
from qvision.data import image_folder, iter_batches
from qvision.model.rewrite import prepare_for_quantization
from qvision.quant.algorithms import bias_correction, cle, parse_algos, run

from qdq_models import PRE16, graph_model, plan_context


def _run(model, x, out="out"):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run([out], {"input": x})[0]


def chain(act: str = "Relu", seed: int = 0) -> onnx.ModelProto:
    """pointwise Conv -> act -> depthwise Conv -> act -> pointwise Conv, with channel
    ranges spread over two orders of magnitude (what equalization is for)."""
    r = np.random.default_rng(seed)
    f = np.float32
    spread = np.logspace(-1, 1, 8).astype(f)
    inits = {
        "w1": (r.standard_normal((8, 3, 3, 3)) * spread[:, None, None, None] * 0.3).astype(f),
        "b1": (r.standard_normal(8) * 0.1).astype(f),
        "w2": (r.standard_normal((8, 1, 3, 3)) * 0.5).astype(f),
        "b2": (r.standard_normal(8) * 0.1).astype(f),
        "w3": (r.standard_normal((4, 8, 1, 1)) * 0.4).astype(f),
        "b3": (r.standard_normal(4) * 0.1).astype(f),
        "zero": np.array(0.0, f),
        "six": np.array(6.0, f),
    }

    def a(x, y, name):
        if act == "Relu":
            return helper.make_node("Relu", [x], [y], name=name)
        return helper.make_node("Clip", [x, "zero", "six"], [y], name=name)

    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="pw1"),
        a("c1", "r1", "act1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=8, name="dw"),
        a("c2", "r2", "act2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["out"], name="pw2"),
    ]
    return graph_model(nodes, inits, ["N", 4, 16, 16])


def _images(flat_dir, n=4):
    return next(iter_batches(image_folder(flat_dir), PRE16, batch_size=n)).inputs


def test_cle_keeps_float_outputs_and_lowers_imbalance(flat_dir):
    model = prepare_for_quantization(chain("Relu"))
    x = _images(flat_dir)
    ref = _run(model, x)
    before = cle.imbalance(model)
    info = cle.equalize(model)
    assert info["pairs"] == 2 and info["skipped_relu6"] == 0
    np.testing.assert_allclose(_run(model, x), ref, rtol=1e-5, atol=1e-5)
    assert info["imbalance_after"] < 0.5 * before, info


def test_cle_leaves_relu6_pairs_exact_or_relaxes_them(flat_dir):
    x = _images(flat_dir)
    model = prepare_for_quantization(chain("Clip"))
    ref = _run(model, x)
    info = cle.equalize(model)
    assert info["pairs"] == 0 and info["skipped_relu6"] == 2
    np.testing.assert_array_equal(_run(model, x), ref)

    relaxed = prepare_for_quantization(chain("Clip"))
    info = cle.equalize(relaxed, relax_relu6=True)
    assert info["pairs"] == 2 and info["relaxed_relu6"] == 2
    assert [n.op_type for n in relaxed.graph.node].count("Relu") == 2
    # equal to the float model with its clips replaced by ReLU
    np.testing.assert_allclose(
        _run(relaxed, x), _run(prepare_for_quantization(chain("Relu")), x), rtol=1e-5, atol=1e-5
    )


def bn_model(flat_dir, seed: int = 0) -> onnx.ModelProto:
    """Conv -> BatchNormalization -> Relu -> Conv, whose BN running statistics are the
    true statistics of the first Conv on the test images (as after training)."""
    r = np.random.default_rng(seed)
    f = np.float32
    w1 = (r.standard_normal((8, 3, 3, 3)) * 0.4).astype(f)
    probe = graph_model(
        [helper.make_node("Conv", ["input", "w1"], ["out"], pads=[1, 1, 1, 1])],
        {"w1": w1},
        ["N", 8, 16, 16],
    )
    c1 = _run(probe, _images(flat_dir, 8))
    inits = {
        "w1": w1,
        "gamma": (r.uniform(0.5, 1.5, 8)).astype(f),
        "beta": (r.standard_normal(8) * 0.5).astype(f),
        "mean": c1.mean(axis=(0, 2, 3)).astype(f),
        "var": c1.var(axis=(0, 2, 3)).astype(f),
        "w2": (r.standard_normal((4, 8, 3, 3)) * 0.3).astype(f),
        "b2": np.zeros(4, f),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node(
            "BatchNormalization", ["c1", "gamma", "beta", "mean", "var"], ["bn"], name="bn"
        ),
        helper.make_node("Relu", ["bn"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["out"], pads=[1, 1, 1, 1], name="conv2"),
    ]
    return graph_model(nodes, inits, ["N", 4, 16, 16])


def test_batchnorm_folds_exactly_and_keeps_its_statistics(flat_dir):
    model = bn_model(flat_dir)
    x = _images(flat_dir)
    stats: dict = {}
    prepared = prepare_for_quantization(model, stats)
    assert "BatchNormalization" not in [n.op_type for n in prepared.graph.node]
    np.testing.assert_allclose(_run(prepared, x), _run(model, x), rtol=1e-4, atol=1e-5)
    beta = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "beta"))
    np.testing.assert_array_equal(stats["bn"][0], beta)


def test_analytical_bias_correction_reduces_mean_output_error(flat_dir):
    stats: dict = {}
    model = prepare_for_quantization(bn_model(flat_dir), stats)
    x = _images(flat_dir, 8)
    ref = _run(model, x)

    def mean_error(ctx):
        from qvision.quant.writer import write_qdq

        got = _run(write_qdq(ctx.model, ctx.plan), x)
        return np.abs((got - ref).mean(axis=(0, 2, 3))).mean()

    plain = plan_context(model, flat_dir, weight_bits=3)
    ctx = plan_context(model, flat_dir, weight_bits=3)
    for c in (plain, ctx):  # only conv2's weight error, which the correction targets
        c.plan.nodes["conv1"].action = "float"
    ctx.bn_stats = stats
    res = run("bias-correction-analytical", ctx)
    assert set(ctx.plan.biases) == {"conv2"} and res.changed == 1, res.message
    assert res.details["no_batchnorm"] == 0  # conv1 kept float is no candidate
    before, after = mean_error(plain), mean_error(ctx)
    assert after < 0.6 * before, (before, after)


def test_expected_input_matches_sampling():
    rng = np.random.default_rng(0)
    mu, sd = np.array([-1.0, 0.5, 4.0]), np.array([1.0, 2.0, 3.0])
    y = rng.standard_normal((200_000, 3)) * sd + mu
    got = bias_correction.expected_input(mu, sd, 0.0, 6.0)
    np.testing.assert_allclose(got, np.clip(y, 0, 6).mean(axis=0), atol=0.02)
    np.testing.assert_allclose(
        bias_correction.expected_input(mu, sd, 0.0, np.inf), np.maximum(y, 0).mean(0), atol=0.02
    )


def test_cle_through_the_api_and_replayed_from_theplan_context(tmp_path, flat_dir):
    src = tmp_path / "chain.onnx"
    onnx.save(chain("Relu"), src)
    a = api.quantize(
        src,
        tmp_path / "a.onnx",
        flat_dir,
        algos="cle,bias-correction",
        plan_out=tmp_path / "p.json",
    )
    cle_done = a.algorithms[0]
    assert (cle_done.name, cle_done.unit, cle_done.changed) == ("cle", "layer pairs", 2)
    assert cle_done.error_after < cle_done.error_before  # weight range imbalance
    b = api.quantize(src, tmp_path / "b.onnx", plan=tmp_path / "p.json")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert b.output_sha256 == a.output_sha256
    assert parse_algos("bias-correction,cle") == ["cle", "bias-correction"]
