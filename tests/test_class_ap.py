"""Per-class AP of a detector against its reference: each class's AP as pycocotools
computes it, the paired bootstrap over images, and a detector built to lose one class."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from qvision import api
from qvision.eval.tasks.class_ap import MIN_IMAGES, class_ap, class_ap_harm
from qvision.eval.tasks.detection import coco_map
from test_detection import BOXES, SIZE, _gt_box, constant_detector

from conftest import PHOTO_NAMES, SKIMAGE


def _random_coco(seed: int = 0, images: int = 12):
    rng = np.random.default_rng(seed)
    ims = [
        {"id": i, "width": 200, "height": 150, "file_name": f"{i}.jpg"}
        for i in range(1, images + 1)
    ]
    anns, dets = [], []
    for im in ims:
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
    cats = [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)]
    return {"images": ims, "annotations": anns, "categories": cats}, dets


def test_class_ap_is_pycocotools_per_category_precision():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, dets = _random_coco()
    ours = class_ap(gt, dets)
    g = COCO()
    g.dataset = json.loads(json.dumps(gt))
    g.createIndex()
    e = COCOeval(g, g.loadRes(dets), "bbox")
    e.evaluate()
    e.accumulate()
    for k, cat in enumerate(e.params.catIds):
        p = e.eval["precision"][:, :, k, 0, -1]
        assert ours[cat] == pytest.approx(p[p > -1].mean(), abs=1e-6)
    # every class has ground truth here, so mAP is their mean
    assert np.mean(list(ours.values())) == pytest.approx(coco_map(gt, dets)["map"], abs=1e-6)
    assert class_ap(gt, []) == {1: 0.0, 2: 0.0, 3: 0.0}


def test_bootstrap_is_paired_and_deterministic():
    gt, dets = _random_coco()
    same = class_ap_harm(gt, dets, dets, str, rounds=30)
    assert all(c.change_points == 0 for c in same.per_class)
    # class 2 is in 7 images, under MIN_IMAGES: no interval
    assert [c.change_ci95 for c in same.per_class] == [(0, 0), (0, 0), None]
    assert same.most_hurt == [] and same.beyond_interval == 0
    # INT8 drops every class-3 box: class 3 loses all its AP on every resample
    worse = [d for d in dets if d["category_id"] != 3]
    h = class_ap_harm(gt, dets, worse, lambda c: f"c{c}", rounds=30)
    assert h.most_hurt == [3] and h.per_class[0].name == "c3"
    c3 = h.per_class[0]
    assert c3.ap == 0 and c3.change_points == pytest.approx(-100 * c3.reference_ap)
    assert c3.images >= MIN_IMAGES and c3.change_ci95[1] < 0 and h.beyond_interval == 1
    again = class_ap_harm(gt, dets, worse, lambda c: f"c{c}", rounds=30)
    assert again == h  # same seed, same figures


def _detection_folder(root, images: int):
    """``images`` real photos, each with the constant detector's two boxes as its truth."""
    root.mkdir()
    ims, anns = [], []
    for i in range(1, images + 1):
        src = PHOTO_NAMES[i % len(PHOTO_NAMES)]
        name = f"{i:02d}_{src}"
        shutil.copy(SKIMAGE / "data" / src, root / name)
        w, h = Image.open(root / name).size
        r = min(SIZE / h, SIZE / w)
        ims.append({"id": i, "file_name": name, "width": w, "height": h})
        for cat, row in [(1, BOXES[0]), (2, BOXES[2])]:
            box = [float(v) for v in _gt_box(*row[:4], r)]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": box})
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    gt = {"images": ims, "annotations": anns, "categories": cats}
    (root / "annotations.json").write_text(json.dumps(gt))
    return root


def test_a_detector_that_loses_one_class(tmp_path):
    ref = constant_detector(tmp_path / "ref.onnx")
    # the "INT8" model moves class b's box off its object
    from qvision.eval.tasks.detection import METADATA_KEY as DET_KEY
    from test_detection import PRE

    from conftest import constant_model

    moved = BOXES.copy()
    moved[2, :2] = [10, 50]
    spec = {"layout": "yolo", "category_ids": [1, 2], "transposed": False}
    q = constant_model(tmp_path / "q.onnx", moved, SIZE, PRE, {DET_KEY: json.dumps(spec)})
    data = _detection_folder(tmp_path / "coco", MIN_IMAGES)
    res = api.evaluate(q, data, task="detection", reference=ref)
    h = res.class_ap
    assert h.most_hurt == [2] and [c.name for c in h.per_class] == ["b", "a"]
    b, a = h.per_class
    assert b.reference_ap == pytest.approx(1.0) and b.ap == 0 and b.change_points == -100
    assert b.change_ci95 == (-100, -100) and h.beyond_interval == 1  # every image loses it
    assert a.change_points == 0 and (a.images, a.instances) == (MIN_IMAGES, MIN_IMAGES)
    few = api.evaluate(q, _detection_folder(tmp_path / "few", 3), task="detection", reference=ref)
    assert few.class_ap.per_class[0].change_ci95 is None  # too few images to resample
    assert api.evaluate(q, data, task="detection").class_ap is None  # no reference


def test_report_and_cli_show_class_ap(tmp_path):
    from qvision.eval.tasks.detection import METADATA_KEY as DET_KEY
    from qvision.report.harm import harm_section
    from test_detection import PRE

    from conftest import constant_model, run_cli

    ref = constant_detector(tmp_path / "ref.onnx")
    moved = BOXES.copy()
    moved[2, :2] = [10, 50]
    spec = {"layout": "yolo", "category_ids": [1, 2], "transposed": False}
    q = constant_model(tmp_path / "q.onnx", moved, SIZE, PRE, {DET_KEY: json.dumps(spec)})
    data = _detection_folder(tmp_path / "coco", 3)
    section = harm_section(api.evaluate(q, data, task="detection", reference=ref))
    assert section["metric"] == "AP@[.5:.95]"
    assert section["rows"] == [["b", "3 / 3", "100.0 → 0.0", "-100.0", "—", ""]]
    assert "fewer than 10 images" in section["summary"]
    r = run_cli("eval", q, "--data", data, "--task", "detection", "--reference", ref)
    assert r.returncode == 0, r.stderr
    assert "most hurt classes by AP" in r.stdout and "1 of 2 classes lost" in r.stdout
