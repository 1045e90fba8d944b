"""Autotuning to an accuracy budget on tiny models: every trial recorded, the reported
figures equal an independent evaluation of the written model, the choice follows the rule."""

import shutil

import pytest

from qvision import api
from qvision.errors import QVisionError

from conftest import run_cli, tiny_classifier


def _check_choice(t):
    met = [i for i, tr in enumerate(t.trials) if tr.met]
    if met:
        assert t.met and t.chosen == met[0]
        assert t.trials[t.chosen].drop <= t.max_drop + 1e-9
    else:
        assert not t.met and "not met" in t.message
        assert t.trials[t.chosen].metric == max(tr.metric for tr in t.trials)


def test_tune_records_trials_and_tells_the_truth(tmp_path, flat_dir):
    src = tiny_classifier(tmp_path / "t.onnx", classes=10, seed=3)
    out = tmp_path / "q.onnx"
    res = api.quantize(
        src, out, flat_dir, weights="int4", algos="none", max_drop=0.0, tune_data=flat_dir
    )
    t = res.tuning
    assert t is not None and t.metric == "top1_agreement" and t.images == 4
    assert t.trials[0].name == "mean-minmax ranges, none"
    _check_choice(t)
    # the written model is the chosen trial: an independent evaluation gives its figure
    e = api.evaluate(out, flat_dir, reference=src)
    assert e.fidelity.top1_agreement == pytest.approx(t.trials[t.chosen].metric)
    names = [tr.name for tr in t.trials]
    if not t.trials[0].met:  # then the other histogram readings of the same statistics
        assert names[1] == "mse ranges, none"


def test_tune_stops_at_the_first_trial_within_budget(tmp_path, labelled_dir):
    src = tiny_classifier(tmp_path / "t.onnx", classes=10)
    res = api.quantize(src, tmp_path / "q.onnx", labelled_dir, max_drop=100, tune_data=labelled_dir)
    t = res.tuning
    assert t.metric == "top1" and t.met and len(t.trials) == 1 and t.chosen == 0
    assert "budget met" in t.message


def test_tune_mixed_precision_steps(tmp_path, photos):
    """2-bit layers that no rounding algorithm saves: the tuner must go on to raise the most
    sensitive layers to the target's weight bits, in sensitivity order, until FP32 agrees."""
    data = tmp_path / "photos"
    data.mkdir()
    for p in photos:
        shutil.copy(p, data / p.name)
    src = tiny_classifier(tmp_path / "t.onnx", classes=10, seed=0)
    res = api.quantize(
        src,
        tmp_path / "q.onnx",
        data,
        weights="int4",
        algos="none",
        layer_bits={"Conv_0": 2, "Gemm_4": 2},
        max_drop=0.0,
        tune_data=data,
    )
    t = res.tuning
    _check_choice(t)
    wide = [tr for tr in t.trials if "native weight bits" in tr.name]
    assert wide and not any(tr.met for tr in t.trials[: t.trials.index(wide[0])])
    assert [len(tr.wide_layers) for tr in wide] == list(range(1, len(wide) + 1))
    assert all(b > 2 for tr in wide for b in tr.wide_layers.values())
    e = api.evaluate(tmp_path / "q.onnx", data, reference=src)
    assert e.fidelity.top1_agreement == pytest.approx(t.trials[t.chosen].metric)


def test_tune_errors(tmp_path, flat_dir):
    src = tiny_classifier(tmp_path / "t.onnx")
    with pytest.raises(QVisionError, match="needs --eval"):
        api.quantize(src, tmp_path / "q.onnx", flat_dir, max_drop=0.5)
    with pytest.raises(QVisionError, match=">= 0"):
        api.quantize(src, tmp_path / "q.onnx", flat_dir, max_drop=-1, tune_data=flat_dir)
    r = run_cli(
        "quantize",
        str(src),
        "-o",
        str(tmp_path / "q.onnx"),
        "--calib",
        str(flat_dir),
        "--max-drop",
        "0.2",
    )
    assert r.returncode != 0 and "needs --eval" in r.stderr and "Traceback" not in r.stderr


def test_cli_max_drop_on_unlabelled_images(tmp_path, flat_dir):
    src = tiny_classifier(tmp_path / "t.onnx")
    js = tmp_path / "r.json"
    r = run_cli(
        "quantize",
        str(src),
        "-o",
        str(tmp_path / "q.onnx"),
        "--calib",
        str(flat_dir),
        "--eval",
        str(flat_dir),
        "--max-drop",
        "100",
        "--json",
        str(js),
    )
    assert r.returncode == 0, r.stderr
    assert "budget met" in r.stdout and "top-1 agreement" in r.stdout
    import json

    data = json.loads(js.read_text())
    assert data["quantize"]["tuning"]["trials"][0]["met"] is True
