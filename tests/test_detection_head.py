"""Detector heads: PicoDet's per-stride outputs decoded by hand, the post-processing tail
kept float by the planner (YOLOv8-style DFL head, SSD-style decode), and label-free
detection fidelity on an unlabelled folder."""

import shutil

import numpy as np
import pytest
from onnx import helper

from qvision import api
from qvision.eval.tasks.detection import DecodeSpec, decode
from qvision.quant.planner import decide_nodes
from qvision.targets import TARGETS
from test_detection import constant_detector

from conftest import SKIMAGE
from qdq_models import graph_model, mobile_block


def test_picodet_decode_matches_a_hand_computed_box():
    hw, strides, bins = (32, 24), [8, 16], 4  # ceil: 4x3 and 2x2 points
    spec = DecodeSpec(layout="picodet", strides=strides, score_threshold=0.1)
    scores = [np.zeros((1, 12, 2), np.float32), np.zeros((1, 4, 2), np.float32)]
    dists = [np.zeros((1, 12, 4 * bins), np.float32), np.zeros((1, 4, 4 * bins), np.float32)]
    # stride 16, point (row 1, col 0): centre (8, 24); distances 1, 2, 3, 0 strides, peaked
    scores[1][0, 2, 1] = 0.9
    for side, d in enumerate([1, 2, 3, 0]):
        dists[1][0, 2, side * bins + d] = 30.0
    boxes, s, cls = decode(scores + dists, 0, spec, hw)
    assert len(boxes) == 1 and cls[0] == 1 and s[0] == pytest.approx(0.9)
    assert boxes[0] == pytest.approx([8 - 16, 24 - 32, 8 + 48, 24 + 0], abs=1e-6)
    with pytest.raises(Exception, match="needs 4 outputs"):
        decode(scores, 0, spec, hw)


def yolov8_head(seed: int = 0):
    """Conv backbone, box and class convs, head concat, split, DFL (softmax over 4 bins,
    fixed 1x1 Conv), sigmoid, output concat: the tail YOLO users keep float."""
    r = np.random.default_rng(seed)
    f = np.float32
    inits = {
        "w1": (r.standard_normal((8, 3, 3, 3)) * 0.4).astype(f),
        "wb": (r.standard_normal((16, 8, 1, 1)) * 0.3).astype(f),
        "wc": (r.standard_normal((2, 8, 1, 1)) * 0.3).astype(f),
        "dfl": np.arange(4, dtype=f).reshape(1, 4, 1, 1),
        "s1": np.array([0, 18, -1], np.int64),
        "split": np.array([16, 2], np.int64),
        "s2": np.array([0, 4, 4, -1], np.int64),
        "s3": np.array([0, 4, -1], np.int64),
    }
    n = helper.make_node
    nodes = [
        n("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2], name="stem"),
        n("Relu", ["c1"], ["r1"], name="relu"),
        n("Conv", ["r1", "wb"], ["box"], name="box_conv"),
        n("Conv", ["r1", "wc"], ["cls"], name="cls_conv"),
        n("Concat", ["box", "cls"], ["head"], axis=1, name="head_cat"),
        n("Reshape", ["head", "s1"], ["flat"], name="flat"),
        n("Split", ["flat", "split"], ["b", "c"], axis=1, name="split"),
        n("Reshape", ["b", "s2"], ["b4"], name="b4"),
        n("Transpose", ["b4"], ["bt"], perm=[0, 2, 1, 3], name="bt"),
        n("Softmax", ["bt"], ["bp"], axis=1, name="softmax"),
        n("Conv", ["bp", "dfl"], ["bd"], name="dfl"),
        n("Reshape", ["bd", "s3"], ["dist"], name="dist"),
        n("Sigmoid", ["c"], ["p"], name="sigmoid"),
        n("Concat", ["dist", "p"], ["out"], axis=1, name="out_cat"),
    ]
    return graph_model(nodes, inits, ["N", 6, 64])


def test_the_post_processing_tail_stays_float():
    model = yolov8_head()
    plan = decide_nodes(model, TARGETS["ort-cpu-vnni"], set())
    assert {k for k in ("stem", "box_conv", "cls_conv") if plan[k].action == "quantize"} == {
        "stem",
        "box_conv",
        "cls_conv",
    }
    tail = ["head_cat", "flat", "b4", "bt", "softmax", "dfl", "sigmoid", "out_cat"]
    assert all(plan[k].action == "float" for k in tail), {k: plan[k].reason for k in tail}
    assert plan["dfl"].reason == "post-processing stays float"
    # a residual Add and a pooling after the last Conv are the network's own work
    block = decide_nodes(mobile_block(), TARGETS["ort-cpu-vnni"], set())
    assert block["pool"].action == "quantize" and block["add"].action == "quantize"
    opt_out = TARGETS["ort-cpu-vnni"].model_copy(update={"float_tail": False})
    assert decide_nodes(model, opt_out, set())["sigmoid"].action == "quantize"


def test_label_free_detection_fidelity_on_an_unlabelled_folder(tmp_path, flat_dir):
    model = constant_detector(tmp_path / "det.onnx")
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ["astronaut.png", "chelsea.png"]:
        shutil.copy(SKIMAGE / "data" / name, plain / name)
    with pytest.raises(Exception, match="pass --reference"):
        api.evaluate(model, plain, task="detection")
    same = api.evaluate(model, plain, task="detection", reference=model)
    assert not same.dataset.labelled and "map" not in same.metrics
    assert same.metrics["map_vs_reference"] == pytest.approx(1.0)
    q = tmp_path / "det-int8.onnx"
    api.quantize(model, q, flat_dir)
    res = api.evaluate(q, plain, task="detection", reference=model)
    assert res.metrics["map50_vs_reference"] == pytest.approx(1.0)
