"""qvision sweep: a YAML of models × targets × algorithms × weights → one results table,
the models and sweep.json/html in the out folder; the config checked before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qvision import api
from qvision.sweep import load_config

from conftest import run_cli, tiny_classifier


def _config(tmp_path, labelled_dir, flat_dir, **extra) -> object:
    m1 = tiny_classifier(tmp_path / "a.onnx")
    tiny_classifier(tmp_path / "b.onnx", seed=3)
    text = (
        f"models: [{m1.name}, {{path: b.onnx}}]\n"
        f"calib: {flat_dir}\n"
        f"data: {labelled_dir}\n"
        "targets: [ort-cpu-vnni]\n"
        "algorithms: [none, 'cle,bias-correction']\n"
        "weights: [int8, int4]\n"
    )
    text += "".join(f"{k}: {v}\n" for k, v in extra.items())
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(text)
    return cfg


def test_sweep_table_matches_single_runs(tmp_path, labelled_dir, flat_dir):
    cfg = _config(tmp_path, labelled_dir, flat_dir)
    res = api.sweep(cfg, tmp_path / "out", threads=1)
    assert len(res.rows) == 2 * 2 * 2
    keys = {(r.model.rsplit("/", 1)[1], r.algorithms, r.weights) for r in res.rows}
    assert len(keys) == 8
    # one row redone by hand: the same model, metric and drop as quantize + evaluate
    row = next(r for r in res.rows if r.model.endswith("b.onnx") and r.weights == "int4"
               and r.algorithms == "cle,bias-correction")  # fmt: skip
    q = tmp_path / "by-hand.onnx"
    api.quantize(tmp_path / "b.onnx", q, flat_dir, target="ort-cpu-vnni", weights="int4",
                 algos="cle,bias-correction", threads=1)  # fmt: skip
    ev = api.evaluate(q, labelled_dir, reference=tmp_path / "b.onnx", threads=1)
    fp = api.evaluate(tmp_path / "b.onnx", labelled_dir, threads=1)
    assert Path(row.output).read_bytes() == q.read_bytes()
    assert (row.int8, row.fp32, row.agreement, row.n) == (
        ev.metrics["top1"],
        fp.metrics["top1"],
        ev.agreement,
        4,
    )
    assert row.drop == pytest.approx(100 * (fp.metrics["top1"] - ev.metrics["top1"]))
    assert row.drop_ci95 == (ev.fidelity.drop_ci95_low, ev.fidelity.drop_ci95_high)
    assert row.applied == ["cle", "bias-correction"] and row.size_bytes == q.stat().st_size
    saved = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert len(saved["rows"]) == 8
    assert "<table>" in (tmp_path / "out" / "sweep.html").read_text()


def test_sweep_cli(tmp_path, labelled_dir, flat_dir):
    cfg = _config(tmp_path, labelled_dir, flat_dir)
    cfg.write_text(cfg.read_text().replace("weights: [int8, int4]", "weights: [int8]")
                   .replace("[none, 'cle,bias-correction']", "[none]"))  # fmt: skip
    r = run_cli("sweep", cfg, "--threads", "1", "--json", tmp_path / "s.json")
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert [x["algorithms"] for x in rows] == ["none", "none"]
    assert (tmp_path / "sweep-out" / "sweep.html").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"targets": "[tpu]"}, "targets: unknown target 'tpu'"),
        ({"algorithms": "[magic]"}, "algorithms: unknown algorithm 'magic'"),
        ({"weights": "[int2]"}, "weights are int8 or int4"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"limit": "0"}, "limit: Input should be greater than or equal to 1"),
    ],
)
def test_bad_config_is_one_line_before_any_work(tmp_path, labelled_dir, flat_dir, extra, message):
    cfg = _config(tmp_path, labelled_dir, flat_dir)
    text = cfg.read_text()
    for k, v in extra.items():
        lines = [ln for ln in text.splitlines() if not ln.startswith(f"{k}:")]
        text = "\n".join([*lines, f"{k}: {v}"]) + "\n"
    cfg.write_text(text)
    r = run_cli("sweep", cfg)
    assert r.returncode == 2 and message in r.stderr and str(cfg) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "sweep-out").exists()


def test_missing_model_named(tmp_path, labelled_dir, flat_dir):
    cfg = _config(tmp_path, labelled_dir, flat_dir)
    cfg.write_text(cfg.read_text().replace("b.onnx", "nope.onnx"))
    with pytest.raises(Exception, match="model 'nope.onnx' not found"):
        load_config(cfg)


def test_unlabelled_data_scores_agreement(tmp_path, labelled_dir, flat_dir):
    cfg = _config(tmp_path, labelled_dir, flat_dir)
    text = cfg.read_text().replace(f"data: {labelled_dir}", f"data: [{flat_dir}, {labelled_dir}]")
    cfg.write_text(text.replace("weights: [int8, int4]", "weights: [int8]"))
    res = api.sweep(cfg, tmp_path / "out", threads=1)
    flat = [r for r in res.rows if r.data == str(flat_dir)]
    assert len(flat) == 4 and all(r.metric == "agreement" and r.fp32 == 1.0 for r in flat)
    assert all(r.drop == pytest.approx(100 * (1 - r.agreement)) for r in flat)
    assert {r.metric for r in res.rows if r.data == str(labelled_dir)} == {"top1"}


def test_out_inside_the_images_is_refused(tmp_path, labelled_dir, flat_dir):
    cfg = _config(tmp_path, labelled_dir, flat_dir)
    r = run_cli("sweep", cfg, "--out", labelled_dir / "models")
    assert r.returncode == 2 and "lies inside the images" in r.stderr
    assert not (labelled_dir / "models").exists()
