"""Data checks: corrupt files, exact and near duplicates, leakage between sets, balance."""

import json
import shutil

from PIL import Image

from qvision import api
from qvision.data.checks import dhash

from conftest import run_cli


def _near_copy(src, dst):
    """Resized and re-encoded as JPEG: a different file, the same picture."""
    img = Image.open(src).convert("RGB")
    img.resize((img.width * 3 // 4, img.height * 3 // 4)).save(dst, quality=80)


def test_duplicates_near_copies_and_corrupt_files(tmp_path, photos):
    root = tmp_path / "set"
    root.mkdir()
    for p in photos[:4]:
        shutil.copy(p, root / p.name)
    shutil.copy(photos[0], root / "copy.png")
    _near_copy(photos[1], root / "near.jpg")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    res = api.check_data(root)
    assert res.files == 7
    assert [p for p, _ in res.unreadable] == ["broken.jpg"]
    assert res.exact_duplicates == [sorted([photos[0].name, "copy.png"])]
    assert [sorted(p[:2]) for p in res.near_duplicates] == [sorted([photos[1].name, "near.jpg"])]
    assert res.sizes["width"][0] > 0 and res.modes
    assert res.problems == 3


def test_dhash_separates_different_photos(photos):
    hashes = [dhash(Image.open(p)) for p in photos[:5]]
    bits = [bin(a ^ b).count("1") for i, a in enumerate(hashes) for b in hashes[i + 1 :]]
    assert min(bits) > 10  # real, different photos are far apart


def test_leakage_against_another_set_and_quantize_warns(tmp_path, labelled_dir, photos):
    calib = tmp_path / "calib"
    calib.mkdir()
    shutil.copy(labelled_dir / "cat" / "chelsea.png", calib / "c.png")  # leaked as is
    _near_copy(labelled_dir / "rocket" / "rocket.jpg", calib / "r.jpg")  # leaked, re-encoded
    shutil.copy(photos[-1], calib / photos[-1].name)
    res = api.check_data(calib, labelled_dir)
    assert res.leaked_exact == [("c.png", "cat/chelsea.png")]
    assert [p[:2] for p in res.leaked_near] == [("r.jpg", "rocket/rocket.jpg")]
    balance = api.check_data(labelled_dir)
    assert balance.classes == {"cat": 2, "rocket": 2} and balance.imbalance == 1.0
    r = run_cli("check-data", calib, "--against", labelled_dir, "--json", tmp_path / "c.json")
    assert r.returncode == 0, r.stderr
    assert "2 problem(s)" in r.stderr
    assert json.loads((tmp_path / "c.json").read_text())["leaked_exact"]
    assert api.leakage_warning(calib, labelled_dir)[0].startswith("1 calibration image(s)")
