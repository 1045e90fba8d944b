"""Outputs never land on or among the inputs: checked before any work, one-line errors,
exit 2, every input byte-identical afterwards."""

from pathlib import Path

from conftest import run_cli


def _one_line(proc, *needles):
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def _snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_output_onto_a_calibration_photo_is_refused(tmp_path, tiny_model, flat_dir):
    before = _snapshot(flat_dir)
    photo = next(iter(before))
    proc = run_cli("quantize", tiny_model, "-o", photo, "--calib", flat_dir)
    _one_line(proc, "inside the input folder")
    assert _snapshot(flat_dir) == before


def test_outputs_inside_the_eval_folder_or_on_each_other_are_refused(
    tmp_path, tiny_model, flat_dir
):
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    (evaluation / "keep.txt").write_text("mine")
    args = ("quantize", tiny_model, "--calib", flat_dir)
    inside = run_cli(*args, "-o", evaluation / "q.onnx", "--eval", evaluation)
    _one_line(inside, "inside the input folder")
    same = run_cli(*args, "-o", tmp_path / "q.onnx", "--plan-out", tmp_path / "q.onnx")
    _one_line(same, "also another output")
    json_on_plan = run_cli(
        *args, "-o", tmp_path / "q.onnx", "--plan-out", tmp_path / "p.json",
        "--json", tmp_path / "p.json",
    )  # fmt: skip
    _one_line(json_on_plan, "also another output")
    assert not (tmp_path / "q.onnx").exists() and not (tmp_path / "p.json").exists()
    assert [p.name for p in evaluation.iterdir()] == ["keep.txt"]
