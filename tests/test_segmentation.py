"""Segmentation: the confusion-matrix metrics against hand counts, label maps mapped back
through the preprocessing, VOC-layout datasets with bad pairs counted, and a tiny ONNX
"bright pixel" segmenter evaluated FP32 and INT8 on real photos."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image, ImageFilter

from qvision import api
from qvision.data.images import load_mask
from qvision.data.preprocess import METADATA_KEY, Preprocess
from qvision.data.segmentation import open_segmentation
from qvision.errors import QVisionError
from qvision.eval.tasks.segmentation import ConfusionMeter, label_maps, to_original

from conftest import SKIMAGE

SIZE = 64
PRE = Preprocess(resize=(SIZE, SIZE), resize_mode="exact", crop=None, mean=[0, 0, 0], std=[1, 1, 1])
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png"]


def bright_segmenter(path, pre=PRE):
    """Class 1 where the mean of R, G, B (0..1) is over 0.5, at half the input resolution."""
    w = np.zeros((2, 3, 1, 1), np.float32)
    w[1, :, 0, 0] = 1 / 3
    nodes = [
        helper.make_node("AveragePool", ["input"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p", "w", "b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "seg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [
            helper.make_tensor_value_info(
                "logits", TensorProto.FLOAT, ["N", 2, SIZE // 2, SIZE // 2]
            )
        ],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.array([0, -0.5], np.float32), "b"),
        ],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    m.metadata_props.add(key=METADATA_KEY, value=pre.to_json())
    onnx.save(m, str(path))
    return path


def voc_folder(root, invert=False):
    """VOC layout: blurred photos (smooth boundaries survive the model's 1/8-1/16 scale),
    masks from the rule at full resolution, a 4-pixel ignore border (255)."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    for name in PHOTOS:
        img = Image.open(SKIMAGE / "data" / name).convert("RGB").filter(ImageFilter.GaussianBlur(8))
        stem = name.rsplit(".", 1)[0]
        img.save(root / "JPEGImages" / f"{stem}.png")
        mask = (np.asarray(img, np.float32).mean(axis=2) / 255 > 0.5).astype(np.uint8)
        if invert:
            mask = 1 - mask
        mask[:4], mask[:, :4] = 255, 255
        Image.fromarray(mask, mode="L").save(root / "SegmentationClass" / f"{stem}.png")
    (root / "classes.txt").write_text("background\nbright\n")
    return root


def test_confusion_metrics_match_hand_counts():
    m = ConfusionMeter()
    truth = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 1]])
    m.update(pred, truth)
    # class 0: tp 1, fp 1 (truth 2 -> 0), fn 1 (-> 1): IoU 1/3; class 1: tp 3, fp 1: 3/4;
    # class 2: tp 1, fn 1: 1/2. The ignored pixel (255) counts nowhere.
    r = m.result(["a", "b", "c"])
    assert r["iou:a"] == pytest.approx(1 / 3) and r["iou:b"] == pytest.approx(3 / 4)
    assert r["iou:c"] == pytest.approx(1 / 2)
    assert r["miou"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert r["pixel_accuracy"] == pytest.approx(5 / 7)
    assert r["mean_class_accuracy"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)


def test_label_maps_go_back_through_letterbox():
    pre = Preprocess(resize=(8, 8), resize_mode="letterbox", crop=None)
    labels = np.zeros((4, 4), np.int64)  # half the input: a 40x20 image fills 8x4, rows 0-1 here
    labels[:2, 2:] = 1
    labels[2:] = 7  # padding rows: must be cut off
    back = to_original(labels, pre, 40, 20)
    assert back.shape == (20, 40) and set(np.unique(back)) == {0, 1}
    assert back[:, 20:].min() == 1 and back[:, :20].max() == 0
    scores = np.zeros((1, 3, 2, 2), np.float32)
    scores[0, 2, 1, 1] = 1
    assert label_maps(scores)[0].tolist() == [[0, 0], [0, 2]]


def test_bright_segmenter_end_to_end_fp32_and_int8(tmp_path, flat_dir):
    model = bright_segmenter(tmp_path / "seg.onnx")
    data = voc_folder(tmp_path / "voc")
    res = api.evaluate(model, data, task="segmentation")
    assert res.n == 3 and res.metrics["miou"] > 0.85 and res.metrics["pixel_accuracy"] > 0.9
    assert {"iou:background", "iou:bright"} <= set(res.metrics)
    wrong = api.evaluate(model, voc_folder(tmp_path / "inv", invert=True), task="segmentation")
    assert wrong.metrics["miou"] < 0.2
    q = tmp_path / "seg-int8.onnx"
    api.quantize(model, q, flat_dir)
    res_q = api.evaluate(q, data, task="segmentation", reference=model)
    assert abs(res_q.metrics["miou"] - res.metrics["miou"]) < 0.02
    assert res_q.agreement > 0.97 and res_q.fidelity.sqnr_db > 20


def test_bad_pairs_are_counted_not_fatal(tmp_path):
    root = voc_folder(tmp_path / "voc")
    Image.new("L", (10, 10)).save(root / "SegmentationClass" / "orphan.png")
    small = Image.new("L", (5, 5))
    small.save(root / "SegmentationClass" / "coffee.png")  # size differs from its image
    rocket = Image.open(SKIMAGE / "data" / "rocket.jpg")
    rocket.save(root / "JPEGImages" / "rocket.jpg")
    Image.new("RGB", rocket.size, (255, 0, 0)).save(root / "SegmentationClass" / "rocket.png")
    ds = open_segmentation(root)
    assert [s.path.name for s in ds.samples] == ["astronaut.png", "chelsea.png", "rocket.jpg"]
    assert ds.annotations.problems == {
        "mask without an image": 1,
        "mask size differs from its image": 1,
    }
    model = bright_segmenter(tmp_path / "seg.onnx")
    res = api.evaluate(model, root, task="segmentation")  # the RGB mask is counted, not fatal
    assert res.n == 3 and any("unreadable mask" in w and "RGB" in w for w in res.warnings)
    with pytest.raises(QVisionError, match="not class indices"):
        load_mask(root / "SegmentationClass" / "rocket.png")
    with pytest.raises(QVisionError, match="not a segmentation dataset"):
        open_segmentation(tmp_path)


def test_rendered_pages_are_a_text_segmentation_set_for_a_probability_map(tmp_path):
    import json

    from qvision.data.preprocess import TASK_KEY
    from qvision.data.segmentation import open_segmentation
    from qvision.data.synth_text import synth_pages
    from qvision.eval.tasks.adapters import _threshold
    from qvision.eval.tasks.segmentation import METADATA_KEY, label_maps

    synth_pages(tmp_path / "pages", 2, seed=3)
    ds = open_segmentation(tmp_path / "pages")
    assert len(ds.samples) == 2 and ds.annotations.classes == ["background", "text"]
    mask = np.asarray(Image.open(ds.samples[0].mask))
    assert set(np.unique(mask)) == {0, 1}
    prob = np.array([[[[0.1, 0.31], [0.29, 0.9]]]], np.float32)
    # a DB text detector's map is a probability: 0.3 splits it, not 0 as for a logit
    assert _threshold({TASK_KEY: "ocr-det"}) == 0.3 and _threshold({}) == 0.0
    assert _threshold({METADATA_KEY: json.dumps({"threshold": 0.5})}) == 0.5
    assert label_maps(prob, 0.3).tolist() == [[[0, 1], [0, 1]]]
    assert label_maps(prob).tolist() == [[[1, 1], [1, 1]]]
