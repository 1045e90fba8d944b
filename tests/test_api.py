import json

import numpy as np
import onnxruntime as ort
import pytest

from qvision import api
from qvision.data import iter_batches, labelled_folder
from qvision.errors import QVisionError
from qvision.records import write_json
from qvision.targets import TARGETS, detect, saturation_warning

from conftest import TINY_PRE, constant_model, tiny_classifier


def _expected_top1(model, root):
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    ds = labelled_folder(root)
    hits = 0
    for b in iter_batches(ds, TINY_PRE, batch_size=4):
        out = sess.run(None, {"input": b.inputs})[0]
        hits += int((out.argmax(1) == np.array([s.label for s in b.samples])).sum())
    return hits / len(ds)


def test_eval_labelled_matches_direct_onnxruntime(tiny_model, labelled_dir, tmp_path):
    res = api.evaluate(tiny_model, labelled_dir, batch_size=3)
    assert res.n == 4 and res.dataset.labelled
    assert res.metrics["top1"] == pytest.approx(_expected_top1(tiny_model, labelled_dir))
    assert res.metrics["top5"] >= res.metrics["top1"]
    assert res.fidelity is None and res.agreement is None
    out = write_json(res, tmp_path / "r.json")
    data = json.loads(out.read_text())
    assert (
        set(data["metrics"]) == {"top1", "top5"}
        and data["task"] == "classification"
        and data["n"] == 4
    )


def test_eval_against_reference(tmp_path, flat_dir):
    a = tiny_classifier(tmp_path / "a.onnx", seed=0)
    b = tiny_classifier(tmp_path / "b.onnx", seed=0)
    c = tiny_classifier(tmp_path / "c.onnx", seed=5)
    same = api.evaluate(b, flat_dir, reference=a)
    assert same.agreement == 1.0 and same.fidelity.sqnr_db is None and same.metrics == {}
    diff = api.evaluate(c, flat_dir, reference=a)
    assert diff.fidelity.sqnr_db is not None and diff.fidelity.cosine < 1.0


def test_top1_drop_against_reference_is_paired_over_the_same_images(
    tmp_path, labelled_dir, flat_dir
):
    # labelled_dir: two cats (class 3), two rockets (class 7); each model always says one class
    cat = constant_model(tmp_path / "cat.onnx", np.eye(10)[3], 32, TINY_PRE)
    rocket = constant_model(tmp_path / "rocket.onnx", np.eye(10)[7], 32, TINY_PRE)
    res = api.evaluate(rocket, labelled_dir, reference=cat)
    assert res.metrics["top1"] == 0.5 and res.agreement == 0.0
    # same accuracy, all four images disagree: no drop, and an interval that says so
    assert res.fidelity.drop_points == 0.0
    # lost 2, gained 2 on 4 images; Agresti-Min adds 1/2 to each cell: ±1.96·sqrt(5)/6
    assert res.fidelity.drop_ci95_points == pytest.approx(100 * 1.959964 * np.sqrt(5) / 6)
    unlabelled = api.evaluate(rocket, flat_dir, reference=cat)
    assert unlabelled.fidelity.drop_points is None


def test_saturation_warning_names_the_target_and_the_fix():
    avx2, vnni = TARGETS["ort-cpu-avx2"], TARGETS["ort-cpu-vnni"]
    w = saturation_warning("ort-cpu-vnni", here=avx2)
    assert "ort-cpu-vnni" in w and "--target ort-cpu-avx2" in w
    # u8 activations, 8-bit weights too; the safe profile of the same runtime is suggested
    assert "--target openvino " in saturation_warning("openvino-vnni", here=avx2)
    assert saturation_warning("openvino", here=avx2) is None  # 7-bit, as ort-cpu-avx2
    assert saturation_warning("ort-cpu-avx2", here=avx2) is None
    assert saturation_warning("tensorrt", here=avx2) is None  # s8 activations
    assert saturation_warning("ort-cpu-vnni", here=vnni) is None
    assert saturation_warning(None, here=avx2) is None
    assert saturation_warning("other", here=avx2) is None


def test_evaluate_warns_about_a_model_made_for_vnni_on_a_cpu_without(
    tmp_path, tiny_model, labelled_dir
):
    avx2_here = detect()[0].name == "ort-cpu-avx2"
    for target, expect in (("ort-cpu-vnni", avx2_here), ("ort-cpu-avx2", False)):
        q = tmp_path / f"{target}.onnx"
        api.quantize(tiny_model, q, labelled_dir, target=target)
        res = api.evaluate(q, labelled_dir)
        assert any("no VNNI" in w and target in w for w in res.warnings) == expect, target
    assert not api.evaluate(tiny_model, labelled_dir).warnings  # float: no target


def test_unlabelled_without_reference_needs_one(tiny_model, flat_dir):
    with pytest.raises(QVisionError, match="--reference"):
        api.evaluate(tiny_model, flat_dir)
    res = api.evaluate(tiny_model, flat_dir, keep_predictions=True)
    assert len(res.predictions) == 4 and len(res.predictions[0].top5) == 5
    assert sum(p for _, p in res.predictions[0].top5) <= 1.0 + 1e-6


def test_fixed_batch_model_is_padded(tmp_path, labelled_dir):
    fixed = tiny_classifier(tmp_path / "fixed.onnx", batch=3)
    res = api.evaluate(fixed, labelled_dir, batch_size=32)
    assert res.batch_size == 3 and res.n == 4
    assert res.metrics["top1"] == pytest.approx(
        _expected_top1(tiny_classifier(tmp_path / "dyn.onnx"), labelled_dir)
    )


def test_preprocess_must_fit_the_model(tmp_path, labelled_dir):
    model = tiny_classifier(tmp_path / "m.onnx", preprocess=None)
    with pytest.raises(QVisionError, match="no preprocessing metadata"):
        api.evaluate(model, labelled_dir)
    with pytest.raises(QVisionError, match="224x224 images but input 'input' takes 32x32"):
        api.evaluate(model, labelled_dir, preprocess="imagenet")
    res = api.evaluate(model, labelled_dir, preprocess={"resize": 40, "crop": 32})
    assert res.n == 4


def test_labels_beyond_outputs_are_an_error(tmp_path, labelled_dir):
    small = tiny_classifier(tmp_path / "m.onnx", classes=5)  # labels go up to 7
    with pytest.raises(QVisionError, match="outside the model's 5 outputs"):
        api.evaluate(small, labelled_dir)


def test_bench_interleaved_two_models(tmp_path):
    a = tiny_classifier(tmp_path / "a.onnx")
    b = tiny_classifier(tmp_path / "b.onnx", size=64, preprocess=None)
    res = api.benchmark([a, b], threads=1, batch=4, rounds=3, seconds=0.1)
    first, second = res.models
    assert first.speedup == pytest.approx(1.0) and second.speedup > 0
    assert first.runs >= 3 and first.median_ms > 0 and first.p90_ms >= first.median_ms
    assert first.size_bytes == a.stat().st_size
    assert first.batch_n.batch == 4 and first.batch_n.throughput_ips > 0
    assert first.peak_rss_bytes and first.peak_rss_bytes > 10 * 2**20


def test_bench_needs_size_for_dynamic_spatial_dims(tmp_path):
    from onnx import TensorProto, helper, save

    node = helper.make_node("Relu", ["x"], ["y"])
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", "w"])],
    )
    path = tmp_path / "dyn.onnx"
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(QVisionError, match="--size"):
        api.benchmark([path], rounds=1, seconds=0.01, memory=False)
    res = api.benchmark([path], rounds=1, seconds=0.01, memory=False, size="16x8")
    assert res.models[0].peak_rss_bytes is None


def test_normalize_refuses_overwriting_input(tiny_model):
    before = tiny_model.read_bytes()
    with pytest.raises(QVisionError, match="input file"):
        api.normalize(tiny_model, tiny_model)
    assert tiny_model.read_bytes() == before


def test_inspect(tiny_model):
    info = api.inspect_model(tiny_model)
    assert info.inputs[0]["shape"] == ["N", 3, 32, 32]
    assert info.op_counts["Gemm"] == 1 and info.parameters == 8 * 27 + 8 + 80 + 10
    assert "qvision.preprocess" in info.metadata
