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
    # every gap carries n and its paired interval; corrupted ones also the joint one over
    # the 6 settings, which is wider
    for r in res.rows:
        assert r.n == 4 and r.gap_ci95[0] <= r.gap <= r.gap_ci95[1]
        if r.corruption != "clean":
            lo, hi = r.gap_joint_ci95
            assert lo < r.gap_ci95[0] and hi > r.gap_ci95[1]
    assert clean.gap_joint_ci95 is None
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


def test_adversarial_rows_carry_n_and_intervals(tmp_path, tiny_model, labelled_dir, flat_dir):
    pytest.importorskip("torch")
    q = tmp_path / "q.onnx"
    api.quantize(tiny_model, q, flat_dir)
    res = api.robustness(
        tiny_model, q, labelled_dir, corruptions=["dark"], severities=(1,), adversarial_images=4
    )
    assert res.adversarial
    for a in res.adversarial:
        for share, n, ci in (
            (a.fp32_success, a.fp32_correct, a.fp32_success_ci95),
            (a.int8_success, a.int8_correct, a.int8_success_ci95),
        ):
            assert n <= 4 and ci[0] <= share <= ci[1]
            assert ci[1] - ci[0] > 0.3 if n else ci == (0.0, 1.0)  # 4 images resolve little
