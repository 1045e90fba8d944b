"""Detection: NMS, mAP against pycocotools on the same predictions, COCO/YOLO datasets with
bad annotations, and a tiny ONNX detector with known outputs evaluated FP32 and INT8."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from qvision import api
from qvision.data.coco import open_detection
from qvision.data.preprocess import Preprocess
from qvision.errors import QVisionError
from qvision.eval.tasks.detection import METADATA_KEY as DET_KEY
from qvision.eval.tasks.detection import coco_map, nms

from conftest import SKIMAGE, constant_model

SIZE = 64
PRE = Preprocess(resize=(SIZE, SIZE), resize_mode="letterbox", crop=None)
# anchors: cx cy w h (input pixels) + 2 class scores; the model ignores its input
BOXES = np.array(
    [
        [20, 20, 16, 16, 0.9, 0.05],
        [21, 20, 16, 16, 0.8, 0.05],  # duplicate of the first: NMS removes it
        [44, 40, 20, 12, 0.1, 0.7],
        [10, 50, 8, 8, 0.0, 0.0005],  # below the score threshold
    ],
    np.float32,
)


def constant_detector(path):
    spec = {"layout": "yolo", "category_ids": [1, 2], "transposed": False}
    return constant_model(path, BOXES, SIZE, PRE, {DET_KEY: json.dumps(spec)})


def _gt_box(cx, cy, w, h, r):
    return [(cx - w / 2) / r, (cy - h / 2) / r, w / r, h / r]


def coco_folder(root, shift=0.0, extra=()):
    root.mkdir()
    images, anns = [], []
    for i, name in enumerate(["astronaut.png", "chelsea.png"], 1):
        shutil.copy(SKIMAGE / "data" / name, root / name)
        w, h = Image.open(root / name).size
        r = min(SIZE / h, SIZE / w)
        images.append({"id": i, "file_name": name, "width": w, "height": h})
        for j, (cat, row) in enumerate([(1, BOXES[0]), (2, BOXES[2])]):
            box = [float(v) for v in _gt_box(*row[:4], r)]
            box[0] += shift
            anns.append({"id": 10 * i + j, "image_id": i, "category_id": cat, "bbox": box})
    data = {
        "images": images,
        "annotations": anns + list(extra),
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    (root / "annotations.json").write_text(json.dumps(data))
    return root


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]], float)
    assert list(nms(boxes, np.array([0.9, 0.8, 0.7]), 0.5)) == [0, 2]
    assert list(nms(boxes, np.array([0.7, 0.8, 0.9]), 0.95)) == [2, 1, 0]


def test_map_equals_pycocotools_on_the_same_predictions():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    images = [{"id": i, "width": 200, "height": 150, "file_name": f"{i}.jpg"} for i in range(1, 6)]
    anns, dets = [], []
    for im in images:
        for _ in range(4):
            x, y = rng.uniform(0, 120), rng.uniform(0, 90)
            w, h = rng.uniform(10, 70), rng.uniform(10, 50)
            cat = int(rng.integers(1, 4))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": im["id"],
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            jit = rng.normal(0, 4, 4)
            dets.append(
                {
                    "image_id": im["id"],
                    "category_id": cat if rng.random() < 0.8 else 1,
                    "bbox": [x + jit[0], y + jit[1], w + jit[2], h + jit[3]],
                    "score": float(rng.random()),
                }
            )
    gt = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3)],
    }
    ours = coco_map(gt, dets)
    g = COCO()
    g.dataset = json.loads(json.dumps(gt))
    g.createIndex()
    e = COCOeval(g, g.loadRes(dets), "bbox")
    e.evaluate()
    e.accumulate()
    e.summarize()
    assert ours["map"] == pytest.approx(e.stats[0], abs=1e-6)
    assert ours["map50"] == pytest.approx(e.stats[1], abs=1e-6)
    assert 0.05 < ours["map"] < 0.95  # neither trivial case


def test_constant_detector_end_to_end_fp32_and_int8(tmp_path, flat_dir):
    model = constant_detector(tmp_path / "det.onnx")
    exact = coco_folder(tmp_path / "exact")
    res = api.evaluate(model, exact, task="detection")
    assert res.metrics["map"] == pytest.approx(1.0) and res.metrics["map50"] == pytest.approx(1.0)
    shifted = coco_folder(tmp_path / "shifted", shift=40.0)
    worse = api.evaluate(model, shifted, task="detection")
    assert worse.metrics["map"] < 0.9
    q = tmp_path / "det-int8.onnx"
    api.quantize(model, q, flat_dir)
    res_q = api.evaluate(q, exact, task="detection", reference=model)
    assert res_q.metrics["map50"] == pytest.approx(1.0)
    assert res_q.agreement == pytest.approx(1.0)


def test_bad_annotations_are_counted_not_fatal(tmp_path):
    extra = [
        {"id": 900, "image_id": 77, "category_id": 1, "bbox": [0, 0, 5, 5]},
        {"id": 901, "image_id": 1, "category_id": 9, "bbox": [0, 0, 5, 5]},
        {"id": 902, "image_id": 1, "category_id": 1, "bbox": [5000, 5000, 5, 5]},
        {"id": 903, "image_id": 1, "category_id": 1, "bbox": [-10, -10, 40, 40]},
    ]
    root = coco_folder(tmp_path / "bad", extra=extra)
    data = json.loads((root / "annotations.json").read_text())
    data["images"].append({"id": 3, "file_name": "gone.png", "width": 10, "height": 10})
    (root / "annotations.json").write_text(json.dumps(data))
    _, det = open_detection(root)
    _, clean = open_detection(coco_folder(tmp_path / "clean"))  # letterbox-edge boxes clip too
    assert det.problems - clean.problems == {
        "listed image missing": 1,
        "annotation of a missing image": 1,
        "unknown category id": 1,
        "box outside its image or empty": 1,
        "box clipped to its image": 1,
    }
    res = api.evaluate(constant_detector(tmp_path / "d.onnx"), root, task="detection")
    assert res.n == 2 and any("unknown category id" in w for w in res.warnings)
    (root / "annotations.json").write_text("{not json")
    with pytest.raises(QVisionError, match="not valid JSON"):
        open_detection(root)


def test_yolo_txt_layout(tmp_path):
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    shutil.copy(SKIMAGE / "data" / "astronaut.png", root / "images" / "a.png")
    (root / "names.txt").write_text("person\nrocket\n")
    (root / "labels" / "a.txt").write_text(
        "0 0.5 0.5 0.2 0.4\n1 0.1 0.1 0.5 0.5\n7 0.5 0.5 0.1 0.1\nbad line\n"
    )
    ds, det = open_detection(root)
    assert len(ds) == 1 and len(det.gt["annotations"]) == 2
    x, y, w, h = det.gt["annotations"][0]["bbox"]
    assert (x, y, w, h) == pytest.approx((204.8, 153.6, 102.4, 204.8))
    assert det.problems["unknown category id"] == 1 and det.problems["unreadable label line"] == 1
    assert det.problems["box clipped to its image"] == 1
