"""Text lines at their own aspect ratio (``resize_mode: line``) through quantization: the
calibration batches differ in width, and every algorithm that keeps batches must cope."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qvision import api
from qvision.data import iter_batches, open_dataset
from qvision.data.preprocess import METADATA_KEY, Preprocess
from qvision.data.synth_text import synth_lines

pytest.importorskip("torch")

ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"
# a small cap and minimum keep the test fast while lines still come out at several widths
LINE_PRE = Preprocess(
    resize=(48, 384),
    resize_mode="line",
    min_width=96,
    width_multiple=32,
    crop=None,
    scale=1 / 255,
    mean=[0.5] * 3,
    std=[0.5] * 3,
)


def tiny_recognizer(path: Path, seed: int = 0) -> Path:
    """CTC-like: Conv(3->8, s2) -> Relu -> Conv(8->16, s2) -> Relu -> mean over height ->
    [N, T, 16] -> MatMul to blank + alphabet + space per time step; W is dynamic."""
    rng = np.random.default_rng(seed)
    classes = len(ALPHABET) + 2
    inits = {
        "w1": rng.standard_normal((8, 3, 3, 3)) * 0.5,
        "b1": rng.standard_normal(8) * 0.1,
        "w2": rng.standard_normal((16, 8, 3, 3)) * 0.3,
        "b2": rng.standard_normal(16) * 0.1,
        "fc": rng.standard_normal((16, classes)),
        "fb": rng.standard_normal(classes) * 0.1,
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("ReduceMean", ["r2"], ["seq"], axes=[2], keepdims=0),
        helper.make_node("Transpose", ["seq"], ["steps"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["steps", "fc"], ["mm"]),
        helper.make_node("Add", ["mm", "fb"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-rec",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 48, "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "T", classes])],
        [numpy_helper.from_array(a.astype(np.float32), n) for n, a in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.metadata_props.add(key=METADATA_KEY, value=LINE_PRE.to_json())
    model.metadata_props.add(key="character", value="\n".join(ALPHABET))
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def rec_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lines")
    rec = tiny_recognizer(root / "rec.onnx")
    calib, lines = root / "calib", root / "eval"
    synth_lines(calib, 10, seed=3)  # batches of 8 and 2: two widths at least
    synth_lines(lines, 6, seed=4)
    return root, rec, calib, lines


@pytest.mark.parametrize(
    ("name", "kwargs", "learned"),
    [
        ("int8-default", {}, None),
        (
            "int4-brecq",
            {"weights": "int4", "algo_options": {"brecq": {"iters": 5, "views": 1, "blend": 1}}},
            "brecq",
        ),
        (
            "adaround",
            {
                "algos": ["adaround", "act-search"],
                "algo_options": {"adaround": {"iters": 5, "blend": 1}},
            },
            "adaround",
        ),
    ],
)
def test_quantize_line_recognizer_with_varying_widths(rec_setup, name, kwargs, learned):
    root, rec, calib, lines = rec_setup
    # the point of the test: brecq's batches of 8 (and so the data set) differ in width
    widths = {b.inputs.shape[-1] for b in iter_batches(open_dataset(calib), LINE_PRE, 8)}
    assert len(widths) > 1, widths
    out, plan = root / f"{name}.onnx", root / f"{name}.plan.json"
    res = api.quantize(rec, out, calib, plan_out=plan, **kwargs)
    assert out.is_file() and res.quantized_nodes >= 3
    if learned:
        saved = json.loads(plan.read_text())
        assert learned in saved["algorithms"] and saved["weight_rounding"]
    scored = api.evaluate(out, lines, task="ocr-rec", reference=rec, batch_size=4)
    assert scored.n == 6 and "cer" in scored.metrics and scored.agreement is not None
    assert scored.preprocess["resize_mode"] == "line"
