"""OCR recognition: CTC decoding, CER, synthetic lines, the text-line dataset, and the real
PP-OCRv4 recognizer evaluated and quantized on rendered lines."""

import numpy as np
import pytest

from qvision import api
from qvision.data import open_dataset
from qvision.data.synth_text import synth_lines
from qvision.errors import QVisionError
from qvision.eval.tasks.ocr import TextMeter, alphabet, ctc_greedy, edit_distance

from conftest import run_cli


def test_ctc_greedy_merges_repeats_and_drops_blanks():
    table = alphabet({"character": "a\nb"}, 4)  # blank, a, b, and the space PaddleOCR adds
    assert table == ["", "a", "b", " "]
    steps = [1, 1, 0, 1, 2, 2, 3, 0, 0, 2]  # a a _ a b b ' ' _ _ b
    scores = np.eye(4)[steps][None]
    assert ctc_greedy(scores, table) == ["aab b"]
    with pytest.raises(QVisionError, match="outputs 9 classes"):
        alphabet({"character": "a\nb"}, 9)
    with pytest.raises(QVisionError, match="no 'character' metadata"):
        alphabet({}, 4)


def test_edit_distance_and_cer():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "abc") == 0
    m = TextMeter()
    m.update(["hello", "wrld"], ["hello", "world"])
    assert m.result() == {"cer": pytest.approx(1 / 10), "exact_match": 0.5}


def test_synthetic_lines_are_deterministic_and_labelled(tmp_path):
    a = synth_lines(tmp_path / "a", 5, seed=7)
    b = synth_lines(tmp_path / "b", 5, seed=7)
    c = synth_lines(tmp_path / "c", 5, seed=8)
    assert a == b and a != c
    for rel, _ in a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    ds = open_dataset(tmp_path / "a")
    assert ds.has_text and [s.text for s in ds.samples] == [t for _, t in a]
    with pytest.raises(QVisionError, match="not an empty folder"):
        synth_lines(tmp_path / "a", 2, seed=1)


def test_text_label_file_errors(tmp_path):
    synth_lines(tmp_path / "d", 2, seed=1)
    labels = tmp_path / "d" / "labels.txt"
    for bad, msg in [
        ("../x.png\thi\n", "outside the dataset folder"),
        ("images/missing.png\thi\n", "image not found"),
        ("images/line_00000.png hi\n", "no TAB"),
    ]:
        labels.write_text(bad)
        with pytest.raises(QVisionError, match=msg):
            open_dataset(tmp_path / "d")
    r = run_cli(
        "eval", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "d"), "--task", "ocr-rec"
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr


def test_ppocr_recognizer_reads_rendered_lines_fp32_and_int8(tmp_path):
    rec = tmp_path / "rec.onnx"
    api.export_zoo_model("ppocr-rec", rec)
    lines, calib = tmp_path / "lines", tmp_path / "calib"
    r = run_cli("data", "synth-text", "--count", "12", "--seed", "7", "-o", str(lines))
    assert r.returncode == 0, r.stderr
    synth_lines(calib, 8, seed=8)
    fp32 = api.evaluate(rec, lines, task="ocr-rec")
    assert fp32.n == 12 and fp32.metrics["cer"] < 0.15, fp32.metrics
    q = tmp_path / "rec-int8.onnx"
    api.quantize(rec, q, calib)
    int8 = api.evaluate(q, lines, task="ocr-rec", reference=rec)
    assert int8.metrics["cer"] < fp32.metrics["cer"] + 0.05, (fp32.metrics, int8.metrics)
    assert int8.agreement is not None and int8.agreement >= 0.5
    assert "cer_vs_reference" in int8.metrics and int8.fidelity is not None
    # through quantize --eval: the lines are labelled by labels.txt, so FP32 is scored
    # against them alone (it was also run against itself as a "reference")
    from qvision.evidence import prove

    done = prove(rec, tmp_path / "rec-int8-b.onnx", calib, eval_dir=lines, task="ocr-rec")
    assert done.fp32.fidelity is None and done.fp32.metrics == fp32.metrics
    assert done.int8.fidelity is not None


def test_paired_cer_change_and_interval():
    """The CER change against a reference equals the difference of the two CERs; its
    interval is narrowest (never zero) when both read every line alike and grows with
    disagreement."""
    from qvision.eval.tasks.ocr import PairedCer, TextMeter

    truth = ["total price", "north station", "exit 12", "coffee", "the river"]
    ref = ["total price", "north statin", "exit 12", "coffee", "the river"]
    model = ["total prise", "north statin", "exit 17", "coffee", "the river"]
    paired, a, b = PairedCer(), TextMeter(), TextMeter()
    paired.update(model, ref, truth)
    a.update(model, truth)
    b.update(ref, truth)
    r = paired.result()
    assert r["drop_points"] == pytest.approx(100 * (a.result()["cer"] - b.result()["cer"]))
    assert r["drop_ci95_points"] > 0
    same = PairedCer()
    same.update(ref, ref, truth)
    alike = same.result()
    assert alike["drop_points"] == 0.0 and 0 < alike["drop_ci95_points"] < r["drop_ci95_points"]


def test_a_recognizer_without_its_alphabet_takes_the_dictionary_file(tmp_path):
    """A user's own PaddleOCR export carries no 'character' metadata: eval --alphabet reads
    the dictionary file, normalize --alphabet stores it in the model, and inspect shows it
    as one summary line instead of thousands."""
    import onnx

    from qvision.cli import metadata_summary

    rec = tmp_path / "rec.onnx"
    api.export_zoo_model("ppocr-rec", rec)
    m = onnx.load(rec)
    table = next(p.value for p in m.metadata_props if p.key == "character")
    keep = [p for p in m.metadata_props if p.key != "character"]
    del m.metadata_props[:]
    m.metadata_props.extend(keep)
    bare = tmp_path / "bare.onnx"
    onnx.save(m, bare)
    keys = tmp_path / "ppocr_keys_v1.txt"
    keys.write_text(table + "\n", encoding="utf-8")
    lines = tmp_path / "lines"
    synth_lines(lines, 6, seed=3)

    r = run_cli("eval", bare, "--data", lines, "--task", "ocr-rec")
    assert r.returncode == 2 and "no 'character' metadata" in r.stderr
    want = api.evaluate(rec, lines, task="ocr-rec").metrics
    assert api.evaluate(bare, lines, task="ocr-rec", alphabet=keys).metrics == want
    short = tmp_path / "short.txt"
    short.write_text("a\nb\n")
    r = run_cli("eval", bare, "--data", lines, "--task", "ocr-rec", "--alphabet", short)
    assert r.returncode == 2 and "short.txt" in r.stderr and "classes" in r.stderr

    fixed = tmp_path / "fixed.onnx"
    r = run_cli("normalize", bare, "-o", fixed, "--alphabet", keys)
    assert r.returncode == 0, r.stderr
    assert api.evaluate(fixed, lines, task="ocr-rec").metrics == want
    summary = metadata_summary(table)
    assert summary.startswith(f"{len(table.splitlines()):,} lines:") and len(summary) < 100
