"""Autotuning to an accuracy budget on tiny models: every trial recorded, the reported
figures equal an independent evaluation of the written model, the choice follows the rule."""

import shutil

import pytest

from qvision import api
from qvision.errors import QVisionError
from qvision.quant.config import TuneOptions

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
        src, out, flat_dir, weights="int4", algos="none", tune=TuneOptions(0.0, flat_dir)
    )
    t = res.tuning
    assert t is not None and t.metric == "top1_agreement" and t.images == 4
    assert t.trials[0].name == "mean-minmax ranges, none"
    assert all(tr.drop_ci95 is None for tr in t.trials)  # no labels: no paired top-1
    _check_choice(t)
    # the written model is the chosen trial: an independent evaluation gives its figure
    e = api.evaluate(out, flat_dir, reference=src)
    assert e.fidelity.top1_agreement == pytest.approx(t.trials[t.chosen].metric)
    names = [tr.name for tr in t.trials]
    if not t.trials[0].met:  # then the other histogram readings of the same statistics
        assert names[1] == "mse ranges, none"


def test_tune_stops_at_the_first_trial_within_budget(tmp_path, labelled_dir):
    src = tiny_classifier(tmp_path / "t.onnx", classes=10)
    res = api.quantize(src, tmp_path / "q.onnx", labelled_dir, tune=TuneOptions(100, labelled_dir))
    t = res.tuning
    assert t.metric == "top1" and t.met and len(t.trials) == 1 and t.chosen == 0
    assert "budget met" in t.message
    # labelled: the drop is paired against FP32 on the same images, with its interval
    assert t.trials[0].drop_ci95 is not None and t.trials[0].drop_ci95 >= 0
    assert "(95 %)" in t.message
    from qvision.report.html import ReportInputs, write_report

    page = write_report(ReportInputs(quantize=res), tmp_path / "report").read_text()
    assert f"{t.trials[0].drop:.2f} ± {t.trials[0].drop_ci95:.2f}" in page


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
        tune=TuneOptions(0.0, data),
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
        api.quantize(src, tmp_path / "q.onnx", flat_dir, tune=TuneOptions(0.5, None))
    with pytest.raises(QVisionError, match=">= 0"):
        api.quantize(src, tmp_path / "q.onnx", flat_dir, tune=TuneOptions(-1, flat_dir))
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


def test_tune_other_tasks_budget_their_own_metric(tmp_path, flat_dir):
    """Segmentation budgets mIoU; the figure equals an independent evaluation."""
    from test_segmentation import bright_segmenter, voc_folder

    src = bright_segmenter(tmp_path / "seg.onnx")
    data = voc_folder(tmp_path / "voc")
    out = tmp_path / "q.onnx"
    res = api.quantize(src, out, flat_dir, tune=TuneOptions(2.0, data, task="segmentation"))
    t = res.tuning
    assert t.metric == "miou" and t.images == 3
    _check_choice(t)
    e = api.evaluate(out, data, task="segmentation")
    assert e.metrics["miou"] == pytest.approx(t.trials[t.chosen].metric)
    fp32 = api.evaluate(src, data, task="segmentation").metrics["miou"]
    assert t.trials[t.chosen].drop == pytest.approx(100 * (fp32 - e.metrics["miou"]))


@pytest.mark.slow
def test_tune_counts_a_rising_error_rate_as_a_drop(tmp_path):
    """OCR recognition budgets CER, where lower is better."""
    from qvision.data.synth_text import synth_lines

    rec = tmp_path / "rec.onnx"
    api.export_zoo_model("ppocr-rec", rec)
    lines, calib = synth_lines(tmp_path / "l", 10, 7), synth_lines(tmp_path / "c", 8, 8)
    assert lines and calib
    res = api.quantize(
        rec,
        tmp_path / "q.onnx",
        tmp_path / "c",
        tune=TuneOptions(50, tmp_path / "l", task="ocr-rec"),
        algos="none",
    )
    t = res.tuning
    assert t.metric == "cer" and t.met and t.chosen == 0
    fp32 = api.evaluate(rec, tmp_path / "l", task="ocr-rec").metrics["cer"]
    q = api.evaluate(tmp_path / "q.onnx", tmp_path / "l", task="ocr-rec").metrics["cer"]
    assert t.fp32_metric == pytest.approx(fp32)
    assert t.trials[0].drop == pytest.approx(100 * (q - fp32))
