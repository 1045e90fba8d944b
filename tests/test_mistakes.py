"""Ordinary mistakes a new user makes (issue 31's list): each is one line on stderr with
exit 2 and nothing written, or, where the input is fine, it just works."""

import json

import onnx
import pytest

from qvision import api

from conftest import run_cli


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"resize": -5, "crop": 32}, "resize must be positive, got -5"),
        ({"mean": [0.5, 0.5], "resize": 32, "crop": 32}, "mean has 2 values"),
        ({"resize": 32, "crop": [32, 0]}, "crop must be positive"),
        ({"resize": 32, "crop": 32, "scale": 0}, "scale must be positive"),
    ],
)
def test_bad_preprocessing_is_one_line_before_any_work(tmp_path, tiny_model, flat_dir, spec, says):
    pre = tmp_path / "pre.json"
    pre.write_text(json.dumps(spec))
    out = tmp_path / "q.onnx"
    r = run_cli("quantize", tiny_model, "-o", out, "--calib", flat_dir, "--preprocess", pre)
    assert r.returncode == 2, r.stderr
    assert says in r.stderr and "pre.json" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def _fixed_batch(src, dst, n: int = 1):
    m = onnx.load(src)
    for t in [*m.graph.input, *m.graph.output]:
        d = t.type.tensor_type.shape.dim[0]
        d.ClearField("dim_param")
        d.dim_value = n
    onnx.save(m, dst)
    return dst


def test_a_fixed_batch_reference_scores_beside_a_dynamic_model(tmp_path, tiny_model, labelled_dir):
    """It failed with 'negative dimensions are not allowed' (batches of 32 padded to 1)."""
    ref = _fixed_batch(tiny_model, tmp_path / "fixed.onnx")
    res = api.evaluate(tiny_model, labelled_dir, reference=ref)
    assert res.n == 4 and res.agreement == 1.0  # the same network
    res = api.evaluate(ref, labelled_dir, reference=tiny_model)
    assert res.n == 4 and res.agreement == 1.0


def test_unlabelled_images_are_called_unlabelled(tiny_model, flat_dir):
    r = run_cli("eval", tiny_model, "--data", flat_dir)
    assert r.returncode == 2
    assert "images have no labels (no class folders); pass --reference" in r.stderr


def test_report_without_eval_fails_before_the_model_is_written(tmp_path, tiny_model, flat_dir):
    out = tmp_path / "q.onnx"
    r = run_cli("quantize", tiny_model, "-o", out, "--calib", flat_dir, "--report", tmp_path / "r")
    assert r.returncode == 2 and "--report needs --eval" in r.stderr
    assert not out.exists() and not (tmp_path / "r").exists()


def test_analyze_names_the_images_it_skipped(tmp_path, tiny_model, flat_dir):
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted(flat_dir.iterdir())[:2]:
        (images / p.name).write_bytes(p.read_bytes())
    (images / "a-broken.jpg").write_bytes(b"not a jpeg")
    res = api.analyze(tiny_model, flat_dir, images=images, sensitivity=False)
    assert [s.path for s in res.skipped] == [str(images / "a-broken.jpg")]
    assert res.images == 2
