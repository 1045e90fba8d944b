"""Robustness: corruptions are deterministic, grow with severity, and FP32 vs INT8 is
scored on the same corrupted images through the task adapter."""

import json

import numpy as np
import pytest
from PIL import Image

from qvision import api
from qvision.eval.robustness import CORRUPTIONS, corrupt

from conftest import run_cli


def _diff(a, b):
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruptions_are_deterministic_and_grow_with_severity(name, photos):
    img = Image.open(photos[1]).convert("RGB")
    outs = [corrupt(name, s)(img, 0) for s in (1, 2, 3)]
    assert all(o.size == img.size and o.mode == "RGB" for o in outs)
    assert np.array_equal(np.asarray(outs[0]), np.asarray(corrupt(name, 1)(img, 0)))
    d = [_diff(o, img) for o in outs]
    assert 0 < d[0] < d[2], d  # visibly changed, more at severity 3


def test_fp32_vs_int8_under_corruptions(tmp_path, tiny_model, labelled_dir, flat_dir):
    q = tmp_path / "q.onnx"
    api.quantize(tiny_model, q, flat_dir)
    res = api.robustness(tiny_model, q, labelled_dir, corruptions=["dark", "jpeg"])
    assert [(r.corruption, r.severity) for r in res.rows] == [
        ("clean", 0),
        ("dark", 1),
        ("dark", 2),
        ("dark", 3),
        ("jpeg", 1),
        ("jpeg", 2),
        ("jpeg", 3),
    ]
    clean = res.rows[0]
    assert clean.fp32 == pytest.approx(api.evaluate(tiny_model, labelled_dir).metrics["top1"])
    assert clean.int8 == pytest.approx(api.evaluate(q, labelled_dir).metrics["top1"])
    assert all(r.gap == pytest.approx(100 * (r.fp32 - r.int8)) for r in res.rows)
    r = run_cli(
        "robustness",
        tiny_model,
        q,
        "--data",
        labelled_dir,
        "--corruptions",
        "fog",
        "--severities",
        "3",
        "--json",
        tmp_path / "r.json",
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [(x["corruption"], x["severity"]) for x in rows] == [("clean", 0), ("fog", 3)]
    bad = run_cli("robustness", tiny_model, q, "--data", labelled_dir, "--corruptions", "rain")
    assert bad.returncode != 0 and "unknown corruption 'rain'" in bad.stderr
