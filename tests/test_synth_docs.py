"""Synthetic document pages (``qvision data synth-docs``): deterministic per page, COCO that
``read_coco`` loads cleanly, every CDLA class present, boxes inside the page, on ink and apart."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from qvision.data.coco import read_coco
from qvision.errors import QVisionError

from conftest import run_cli

pytest.importorskip("matplotlib")
pytest.importorskip("skimage")

from qvision.data.synth_docs import CATEGORIES, HEIGHT, WIDTH, synth_docs  # noqa: E402


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs") / "a"
    return root, synth_docs(root, 12, seed=3)


def _boxes(coco: dict, image_id: int) -> list[list[float]]:
    return [a["bbox"] for a in coco["annotations"] if a["image_id"] == image_id]


def test_read_coco_loads_it_without_problems(docs):
    root, coco = docs
    ds, det = read_coco(root)
    assert not det.problems
    assert len(ds.samples) == 12 and len(det.gt["annotations"]) == len(coco["annotations"])
    cats = [(c["id"], c["name"]) for c in det.gt["categories"]]
    assert cats == list(enumerate(CATEGORIES, 1))
    assert sorted(p.name for p in (root / "images").iterdir())[0] == "page_00000.png"


def test_every_class_appears(docs):
    seen = Counter(a["category_id"] for a in docs[1]["annotations"])
    assert sorted(seen) == list(range(1, 11)), seen


def test_boxes_lie_on_ink_inside_the_page_and_apart(docs):
    root, coco = docs
    for im in coco["images"]:
        assert (im["width"], im["height"]) == (WIDTH, HEIGHT)
        page = np.asarray(Image.open(root / im["file_name"]).convert("L"))
        boxes = _boxes(coco, im["id"])
        for x, y, w, h in boxes:
            assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= WIDTH and y + h <= HEIGHT
            assert page[y : y + h, x : x + w].min() < 160  # a box holds ink
        for (ax, ay, aw, ah), (bx, by, bw, bh) in itertools.combinations(boxes, 2):
            apart = ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay
            assert apart, (im["file_name"], (ax, ay, aw, ah), (bx, by, bw, bh))


def test_cli_regenerates_the_same_pages_and_another_seed_differs(docs, tmp_path):
    root, coco = docs
    r = run_cli("data", "synth-docs", "--count", "2", "--seed", "3", "-o", tmp_path / "b")
    assert r.returncode == 0, r.stderr
    assert "wrote 2 pages" in r.stdout
    again = json.loads((tmp_path / "b" / "annotations.json").read_text())
    for i in (1, 2):  # page i depends on (seed, i) only, not on how many pages were asked for
        assert _boxes(again, i) == _boxes(coco, i)
        name = f"images/page_{i - 1:05d}.png"
        assert (tmp_path / "b" / name).read_bytes() == (root / name).read_bytes()
    other = synth_docs(tmp_path / "c", 2, seed=4)
    assert _boxes(other, 1) != _boxes(coco, 1)
    assert (tmp_path / "c/images/page_00000.png").read_bytes() != (root / name).read_bytes()


def test_bad_input_is_one_line_and_exit_2(docs, tmp_path):
    root, _ = docs
    r = run_cli("data", "synth-docs", "--count", "1", "-o", root)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error:") and "not an empty folder" in r.stderr
    with pytest.raises(QVisionError, match="--count must be at least 1"):
        synth_docs(tmp_path / "new", 0, seed=0)
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in root.parent.iterdir()) == ["a"]  # no half-built folder left
