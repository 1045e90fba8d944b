import hashlib
import shutil

import numpy as np
import pytest

from qvision.data import (
    LoadReport,
    build_manifest,
    image_folder,
    iter_batches,
    labelled_folder,
    open_dataset,
)
from qvision.errors import QVisionError

from conftest import TINY_PRE


def test_classes_txt_sets_indices(labelled_dir):
    ds = labelled_folder(labelled_dir)
    assert ds.classes[3] == "cat" and ds.classes[7] == "rocket"
    assert sorted({s.label for s in ds.samples}) == [3, 7]
    assert all(s.label == 3 for s in ds.samples if s.path.parent.name == "cat")


def test_sorted_folders_without_classes_txt(labelled_dir):
    (labelled_dir / "classes.txt").unlink()
    ds = labelled_folder(labelled_dir)
    assert ds.classes == ["cat", "rocket"]
    assert sorted({s.label for s in ds.samples}) == [0, 1]


def test_unlisted_class_folder_is_an_error(labelled_dir, photos):
    (labelled_dir / "zebra").mkdir()
    shutil.copy(photos[0], labelled_dir / "zebra" / "z.png")
    with pytest.raises(QVisionError, match="zebra"):
        labelled_folder(labelled_dir)


def test_open_dataset_detects_layout(labelled_dir, flat_dir):
    assert open_dataset(labelled_dir).labelled
    flat = open_dataset(flat_dir)
    assert not flat.labelled and len(flat) == 4


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "notes.txt").write_text("x")
    with pytest.raises(QVisionError, match="no images"):
        image_folder(tmp_path / "e")
    with pytest.raises(QVisionError, match="not found"):
        open_dataset(tmp_path / "missing")


def test_corrupt_file_is_skipped_with_reason_or_fatal_when_strict(flat_dir):
    bad = flat_dir / "broken.jpg"
    bad.write_bytes((flat_dir / "rocket.jpg").read_bytes()[:2000])
    ds = image_folder(flat_dir)
    report = LoadReport()
    batches = list(iter_batches(ds, TINY_PRE, batch_size=2, report=report))
    assert sum(len(b.samples) for b in batches) == 4
    assert [p for p, _ in report.skipped] == [str(bad)]
    assert batches[0].inputs.shape == (2, 3, 32, 32)
    with pytest.raises(QVisionError, match="broken.jpg"):
        list(iter_batches(ds, TINY_PRE, batch_size=2, strict=True))


def test_batches_keep_order(flat_dir):
    ds = image_folder(flat_dir)
    got = [s.path for b in iter_batches(ds, TINY_PRE, batch_size=3) for s in b.samples]
    assert got == [s.path for s in ds.samples]
    one = np.stack([TINY_PRE.apply(__import__("qvision").data.load_image(ds.samples[0].path))])
    first = next(iter_batches(ds, TINY_PRE, batch_size=3)).inputs[:1]
    assert np.array_equal(one, first)


def test_manifest_hashes(labelled_dir):
    man = build_manifest(labelled_folder(labelled_dir))
    assert man.n == 4
    for e in man.files:
        assert e.sha256 == hashlib.sha256((labelled_dir / e.path).read_bytes()).hexdigest()
    same = build_manifest(labelled_folder(labelled_dir))
    assert same.sha256 == man.sha256
    (labelled_dir / "cat" / "coffee.png").write_bytes(
        (labelled_dir / "rocket" / "rocket.jpg").read_bytes()
    )
    assert build_manifest(labelled_folder(labelled_dir)).sha256 != man.sha256
