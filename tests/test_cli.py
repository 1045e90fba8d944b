"""The CLI as a user meets it: one-line errors, non-zero exits, no tracebacks, nothing overwritten."""

import json
import shutil

import pytest

from conftest import run_cli, tiny_classifier


def _assert_one_line_error(proc, *needles):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for n in needles:
        assert str(n) in lines[0], lines[0]


@pytest.fixture
def bad_inputs(tmp_path, tiny_model):
    data = tiny_model.read_bytes()
    (tmp_path / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.onnx").write_text("name,score\nresnet,0.76\n")
    (tmp_path / "noimages").mkdir()
    (tmp_path / "noimages" / "readme.txt").write_text("nothing here")
    return tmp_path


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        ("missing.onnx", "file not found"),
        ("truncated.onnx", "not a valid ONNX"),
        ("text.onnx", "not a valid ONNX"),
    ],
)
def test_bad_models(bad_inputs, labelled_dir, model, problem):
    proc = run_cli("eval", bad_inputs / model, "--data", labelled_dir)
    _assert_one_line_error(proc, bad_inputs / model, problem)


def test_folder_without_images(bad_inputs, tiny_model):
    proc = run_cli("eval", tiny_model, "--data", bad_inputs / "noimages")
    _assert_one_line_error(proc, bad_inputs / "noimages", "no images found")


def test_non_image_model(tmp_path, labelled_dir):
    from onnx import TensorProto, helper, save

    node = helper.make_node("Relu", ["features"], ["y"])
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 128])],
    )
    path = tmp_path / "vector.onnx"
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    proc = run_cli("eval", path, "--data", labelled_dir)
    _assert_one_line_error(proc, path, "input 'features'", "expected an image tensor")


def test_corrupt_jpeg_among_good_ones(tmp_path, tiny_model, labelled_dir):
    bad = labelled_dir / "cat" / "broken.jpg"
    bad.write_bytes((labelled_dir / "rocket" / "rocket.jpg").read_bytes()[:1500])
    out = tmp_path / "r.json"
    proc = run_cli("eval", tiny_model, "--data", labelled_dir, "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert "skipped 1" in proc.stderr and "broken.jpg" in proc.stderr
    res = json.loads(out.read_text())
    assert res["n"] == 4 and res["dataset"]["files"] == 5
    assert res["dataset"]["skipped"][0]["path"] == str(bad)
    strict = run_cli("eval", tiny_model, "--data", labelled_dir, "--strict")
    _assert_one_line_error(strict, bad, "truncated")


def test_output_equal_to_input_is_refused(tiny_model, labelled_dir):
    before = tiny_model.read_bytes()
    proc = run_cli("normalize", tiny_model, "-o", tiny_model)
    _assert_one_line_error(proc, tiny_model, "input file")
    proc = run_cli("eval", tiny_model, "--data", labelled_dir, "--json", tiny_model)
    _assert_one_line_error(proc, tiny_model, "input file")
    assert tiny_model.read_bytes() == before


def test_failed_export_leaves_existing_output_intact(tmp_path):
    target = tmp_path / "keep.onnx"
    target.write_bytes(b"previous contents")
    proc = run_cli("zoo", "export", "no-such-model", "-o", target)
    _assert_one_line_error(proc, "unknown zoo model")
    assert target.read_bytes() == b"previous contents"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.onnx"]


def test_eval_bench_json(tmp_path, tiny_model, labelled_dir):
    ev = tmp_path / "eval.json"
    proc = run_cli(
        "eval", tiny_model, "--data", labelled_dir, "--reference", tiny_model, "--json", ev
    )
    assert proc.returncode == 0, proc.stderr
    e = json.loads(ev.read_text())
    assert {"top1", "top5"} <= set(e["metrics"]) and e["agreement"] == 1.0

    other = tiny_classifier(tmp_path / "other.onnx", seed=3)
    bj = tmp_path / "bench.json"
    proc = run_cli(
        "bench",
        tiny_model,
        other,
        "--rounds",
        "2",
        "--seconds",
        "0.1",
        "--threads",
        "1",
        "--json",
        bj,
    )
    assert proc.returncode == 0, proc.stderr
    b = json.loads(bj.read_text())
    assert [m["path"] for m in b["models"]] == [str(tiny_model), str(other)]
    for m in b["models"]:
        assert {"median_ms", "p90_ms", "size_bytes", "speedup"} <= set(m)
    assert b["models"][0]["speedup"] == 1.0


def test_usage_errors_are_one_line(tiny_model):
    proc = run_cli("eval", tiny_model)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "--data" in proc.stderr


def test_normalize_and_manifest(tmp_path, tiny_model, labelled_dir):
    out = tmp_path / "norm.onnx"
    proc = run_cli("normalize", tiny_model, "-o", out)
    assert proc.returncode == 0 and out.is_file()
    man = tmp_path / "manifest.json"
    proc = run_cli("data", "manifest", labelled_dir, "-o", man)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(man.read_text())["n"] == 4
    shutil.rmtree(labelled_dir)
    proc = run_cli("data", "manifest", labelled_dir)
    _assert_one_line_error(proc, labelled_dir, "not found")


@pytest.mark.slow
def test_demo_runs_offline_and_writes_results(tmp_path):
    from qvision.demo import run_demo

    # the OCR part on a few lines: the demo's 80 take about 40 s more
    res, report = run_demo(tmp_path / "demo", seconds=0.2, ocr_lines=12, ocr_calib_lines=8)
    page = report.read_text()
    assert report.name == "report.html" and "Sensitivity" in page
    data = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert data["kind"] == "demo" and data["eval"]["n"] >= 8
    by_name = {p["path"].rsplit("/", 1)[-1]: p["labels"][0] for p in data["eval"]["predictions"]}
    # real weights on real photos
    assert by_name["skimage-coffee.png"] == "espresso"
    assert by_name["skimage-chelsea.png"] in {"tabby", "tiger_cat", "Egyptian_cat"}
    assert len(data["bench"]["models"]) == 2 and data["bench"]["models"][1]["path"].endswith(
        ".int8.onnx"
    )
    assert res.model.name == "efficientnet-lite0"
    assert res.quantize.quantized_nodes > 50 and res.quantize.target.startswith("ort-cpu")
    # INT8 keeps most top-1 answers of FP32 on the photos it was calibrated on
    assert res.int8_eval.fidelity.top1_agreement >= 0.7 and res.int8_eval.fidelity.sqnr_db > 8
    # the photos are the calibration set too, and the quantize result says so
    assert any("also in the evaluation set" in w for w in res.quantize.warnings)

    # part 2, the labelled figure: PP-OCRv4 recognizer, FP32 vs INT8 CER on rendered lines
    ocr = res.ocr
    assert ocr is not None and data["ocr"]["n"] == ocr.n == 12 == ocr.fp32.n == ocr.int8.n
    assert (ocr.lines, ocr.calib_lines) == (12, 8) and ocr.seed != ocr.calib_seed
    assert ocr.model.name == "ppocr-rec" and ocr.fp32.task == ocr.int8.task == "ocr-rec"
    assert ocr.quantize.calib_images == 8 and ocr.int8.reference == ocr.model.path
    # calibration and evaluation lines are different images
    assert not any("also in the evaluation set" in w for w in ocr.quantize.warnings)
    assert (ocr.cer_fp32, ocr.cer_int8) == (ocr.fp32.metrics["cer"], ocr.int8.metrics["cer"])
    assert ocr.cer_fp32 < 0.15 and ocr.cer_int8 < 0.2  # real weights reading real text
    # the change is paired over the same lines: the difference of the two CERs, in points,
    # inside its own 95 % interval
    lo, hi = ocr.cer_change_ci95
    assert abs(ocr.cer_change_points - 100 * (ocr.cer_int8 - ocr.cer_fp32)) < 1e-9
    assert lo < ocr.cer_change_points < hi
    assert "Also measured in this run" in page and "ppocr-rec" in page


def test_report_without_eval_fails_before_any_work(tmp_path, tiny_model, flat_dir):
    out = tmp_path / "q.onnx"
    proc = run_cli(
        "quantize", tiny_model, "-o", out, "--calib", flat_dir, "--report", tmp_path / "r"
    )
    assert proc.returncode == 2
    _assert_one_line_error(proc, "--report needs --eval")
    assert not out.exists() and not (tmp_path / "r").exists()


def test_quantize_json_lists_what_each_algorithm_did(tmp_path, tiny_model, flat_dir):
    out, js = tmp_path / "q.onnx", tmp_path / "q.json"
    proc = run_cli(
        "quantize", tiny_model, "-o", out, "--calib", flat_dir,
        "--algo", "cle,bias-correction", "--json", js,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    done = json.loads(js.read_text())["algorithms"]
    assert [a["name"] for a in done] == ["cle", "bias-correction"]
    assert done[1]["unit"] == "biases" and done[1]["changed"] >= 1 and done[1]["seconds"] >= 0
    proc = run_cli(
        "quantize", tiny_model, "-o", out, "--calib", flat_dir,
        "--algo-option", "bias-correction.iters=3",
    )  # fmt: skip
    _assert_one_line_error(proc, "unknown bias-correction option 'iters'")
