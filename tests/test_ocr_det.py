"""OCR detection: connected regions against scipy, exact polygon IoU, ICDAR-style matching
with don't-care regions, synthetic pages, a constant "DB" model with known output evaluated
FP32 and INT8, and the real PP-OCRv4 detector on rendered pages."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from qvision import api
from qvision.data.preprocess import Preprocess
from qvision.data.synth_text import synth_pages
from qvision.data.text_regions import open_text_regions
from qvision.errors import QVisionError
from qvision.eval.tasks.ocr_det import DbSpec, HmeanMeter, components, db_boxes, iou, rect_polygon
from qvision.zoo.registry import OCR_NORM

from conftest import SKIMAGE, constant_model, run_cli

SIZE = 64
PRE = Preprocess(resize=(SIZE, SIZE), resize_mode="letterbox", crop=None)
RECTS = [(8, 10, 30, 18), (36, 26, 60, 36)]  # x0 y0 x1 y1, map (= input) pixels, inside
# the letterboxed content of both photos (chelsea fills 43 of 64 rows)


def test_components_match_scipy_labels():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for density in (0.2, 0.45, 0.6):
        mask = rng.random((40, 57)) < density
        ours = sorted(components(mask))
        lab, _ = ndimage.label(mask, structure=np.ones((3, 3)))
        theirs = sorted(
            (s[0].start, s[0].stop, s[1].start, s[1].stop) for s in ndimage.find_objects(lab)
        )
        assert ours == theirs


def test_polygon_iou_is_exact():
    square = rect_polygon(np.array([0, 0, 10, 10]))
    assert iou(square, np.array([5, 0, 15, 10]))[0] == pytest.approx(50 / 150)
    triangle = np.array([[0, 0], [10, 0], [0, 10]], float)  # area 50, half inside x<5
    v, inter = iou(triangle, np.array([0, 0, 5, 20]))
    assert inter == pytest.approx(50 - 12.5) and v == pytest.approx(37.5 / (50 + 100 - 37.5))
    assert iou(square, np.array([20, 20, 30, 30]))[0] == 0.0


def test_hmean_one_to_one_and_dont_care():
    truth = [
        (rect_polygon(np.array([0, 0, 10, 10])), False),
        (rect_polygon(np.array([20, 0, 30, 10])), False),
        (rect_polygon(np.array([40, 0, 50, 10])), True),  # ###
    ]
    boxes = np.array(
        [[0, 0, 10, 10], [1, 0, 11, 10], [40, 0, 50, 10], [60, 60, 70, 70]], float
    )  # a hit, a duplicate, one on the don't-care region, a false alarm
    m = HmeanMeter()
    m.update(truth, boxes)
    assert (m.hits, m.preds, m.truths) == (1, 3, 2)
    r = m.result()
    assert r["precision"] == pytest.approx(1 / 3) and r["recall"] == pytest.approx(1 / 2)
    assert r["hmean"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))


def test_db_boxes_grow_kernels_and_drop_weak_regions():
    prob = np.zeros((40, 60), np.float32)
    prob[10:20, 10:40] = 0.9  # a text kernel 30 x 10
    prob[30:34, 50:54] = 0.4  # weak: mean under box_thresh
    boxes, scores = db_boxes(prob, DbSpec())
    d = 30 * 10 * 1.5 / (2 * 40)
    assert boxes.tolist() == [[10 - d, 10 - d, 40 + d, 20 + d]]
    assert scores[0] == pytest.approx(0.9)
    with pytest.raises(QVisionError, match="unknown ocr-det decoder setting 'thresold'"):
        DbSpec.from_options({"thresold": 0.2})


def test_synthetic_pages_are_deterministic_with_regions_inside(tmp_path):
    a = synth_pages(tmp_path / "a", 3, seed=7, width=320, height=240)
    b = synth_pages(tmp_path / "b", 3, seed=7, width=320, height=240)
    assert a == b and a != synth_pages(tmp_path / "c", 3, seed=8, width=320, height=240)
    ds = open_text_regions(tmp_path / "a")
    assert len(ds) == 3
    for s in ds.samples:
        regions = ds.annotations.regions[s.image_id]
        assert regions and all(not dont for _, dont in regions)
        for poly, _ in regions:
            assert poly[:, 0].min() >= 0 and poly[:, 0].max() <= 320 and poly[:, 1].max() <= 240


def constant_db_model(path):
    """Ignores its input; outputs a probability map holding RECTS as shrunk text kernels."""
    prob = np.zeros((SIZE, SIZE), np.float32)
    for x0, y0, x1, y1 in RECTS:
        prob[y0:y1, x0:x1] = 0.95
    return constant_model(path, prob[None], SIZE, PRE)


def regions_folder(root, shift=0.0, extra=""):
    """Two photos whose ground truth is RECTS after unclip, in original pixels."""
    (root / "images").mkdir(parents=True)
    lines = []
    for name in ["astronaut.png", "chelsea.png"]:
        shutil.copy(SKIMAGE / "data" / name, root / "images" / name)
        w, h = Image.open(root / "images" / name).size
        r = min(SIZE / h, SIZE / w)
        regions = []
        for x0, y0, x1, y1 in RECTS:
            d = (x1 - x0) * (y1 - y0) * 1.5 / (2 * ((x1 - x0) + (y1 - y0)))
            box = np.array([x0 - d + shift, y0 - d, x1 + d + shift, y1 + d]) / r
            regions.append({"transcription": "t", "points": rect_polygon(box).tolist()})
        lines.append(f"images/{name}\t{json.dumps(regions)}\n")
    (root / "labels.txt").write_text("".join(lines) + extra)
    return root


def test_constant_db_model_end_to_end_fp32_and_int8(tmp_path, flat_dir):
    model = constant_db_model(tmp_path / "db.onnx")
    exact = regions_folder(tmp_path / "exact")
    res = api.evaluate(model, exact, task="ocr-det")
    assert res.metrics == {"precision": 1.0, "recall": 1.0, "hmean": 1.0}
    shifted = api.evaluate(model, regions_folder(tmp_path / "shift", shift=12), task="ocr-det")
    assert shifted.metrics["hmean"] < 1.0
    q = tmp_path / "db-int8.onnx"
    api.quantize(model, q, flat_dir)
    res_q = api.evaluate(q, exact, task="ocr-det", reference=model)
    assert res_q.metrics["hmean"] == 1.0 and res_q.agreement == 1.0


def test_bad_region_lines_are_counted_not_fatal(tmp_path):
    bad = 'images/astronaut.png\tnot json\nimages/chelsea.png\t[{"points": [[1, 2]]}]\n'
    root = regions_folder(tmp_path / "d", extra=bad)
    ds = open_text_regions(root)
    assert len(ds) == 3  # the chelsea line with one bad region is kept, without that region
    assert ds.annotations.problems == {
        "line whose regions are not JSON": 1,
        "region without 3 or more [x, y] points": 1,
    }
    (root / "labels.txt").write_text("../x.png\t[]\n")
    r = run_cli("eval", str(tmp_path / "m.onnx"), "--data", str(root), "--task", "ocr-det")
    assert r.returncode != 0 and "Traceback" not in r.stderr


def test_ppocr_detector_finds_rendered_lines_fp32(tmp_path):
    det = tmp_path / "det.onnx"
    api.export_zoo_model("ppocr-det", det)
    pages = tmp_path / "pages"
    r = run_cli(
        "data", "synth-text", "--kind", "pages", "--count", "4", "--seed", "7", "-o", str(pages)
    )
    assert r.returncode == 0, r.stderr
    pre = Preprocess(resize=(480, 640), resize_mode="letterbox", crop=None, **OCR_NORM)
    res = api.evaluate(det, pages, task="ocr-det", preprocess=pre)
    assert res.metrics["hmean"] > 0.9, res.metrics
