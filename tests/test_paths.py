"""Outputs never land on or among the inputs: checked before any work, one-line errors,
exit 2, every input byte-identical afterwards."""

import json
from pathlib import Path

import pytest

from qvision import api

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


def test_limit_counts_usable_images_and_skips_are_named(tmp_path, tiny_model, flat_dir):
    from qvision import api

    for name in ("0-broken.jpg", "1-empty.png"):  # sorted first, so --limit 4 meets them
        (flat_dir / name).write_bytes(b"not an image" if "broken" in name else b"")
    res = api.quantize(tiny_model, tmp_path / "q.onnx", flat_dir, limit=4, check_images=0)
    assert res.calib_images == 4
    assert sorted(Path(s.path).name for s in res.skipped) == ["0-broken.jpg", "1-empty.png"]
    manifest = json.loads((tmp_path / "q.manifest.json").read_text())
    assert manifest["calibration"]["images"] == 4
    proc = run_cli("quantize", tiny_model, "-o", tmp_path / "c.onnx", "--calib", flat_dir)
    assert proc.returncode == 0
    assert "skipped 2 unreadable calibration file(s)" in proc.stderr
    assert "0-broken.jpg" in proc.stderr and "1-empty.png" in proc.stderr


def test_outputs_get_the_usual_file_mode_and_version_prints(tmp_path, tiny_model, flat_dir):
    import os

    from qvision import __version__, api

    api.quantize(tiny_model, tmp_path / "q.onnx", flat_dir, check_images=0)
    mask = os.umask(0)
    os.umask(mask)
    for name in ("q.onnx", "q.manifest.json"):  # mkstemp's 0600 used to stay
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"qvision {__version__}"


def test_label_free_folders_follow_symlinked_subfolders_once(tmp_path, flat_dir):
    from qvision.data import image_folder

    root = tmp_path / "calib"
    root.mkdir()
    (root / "linked").symlink_to(flat_dir, target_is_directory=True)
    (flat_dir / "loop").symlink_to(root, target_is_directory=True)  # a cycle back up
    files = [s.path for s in image_folder(root).samples]
    assert len(files) == 4 and {p.name for p in files} == {
        p.name for p in flat_dir.iterdir() if p.is_file()
    }


def test_output_set_replaces_all_or_none(tmp_path):
    from qvision.fileio import output_set

    files = [tmp_path / n for n in ("m.onnx", "plan.json", "m.manifest.json")]
    for f in files:
        f.write_text("old")
    with pytest.raises(RuntimeError), output_set() as stage:
        for f in files[:2]:
            stage(f).write_text("new")
        raise RuntimeError("interrupted before the manifest")
    assert [f.read_text() for f in files] == ["old"] * 3
    with output_set() as stage:
        for f in files:
            stage(f).write_text("new")
    assert [f.read_text() for f in files] == ["new"] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f.name for f in files)


def test_an_interrupted_quantize_keeps_the_previous_model_plan_and_manifest(
    tmp_path, tiny_model, flat_dir, monkeypatch
):
    """Interrupted after the model and plan were made but before the manifest: nothing
    of the run is in place (before, the new model sat beside the old plan and manifest)."""
    from qvision.quant import pipeline

    out, plan = tmp_path / "q.onnx", tmp_path / "plan.json"
    api.quantize(tiny_model, out, flat_dir, plan_out=plan)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.provenance, "write_manifest", interrupted)
    with pytest.raises(KeyboardInterrupt):
        api.quantize(tiny_model, out, flat_dir, plan_out=plan, method="percentile")
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder this process cannot write: chmod for a normal user; root writes through
    modes, so for root a read-only tmpfs mount (skipped where mounting is not allowed)."""
    import os
    import subprocess

    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)
        return
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
        capture_output=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"running as root and cannot mount a read-only folder: {r.stderr!r}")
    try:
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], check=False)


@pytest.mark.parametrize("flag", ["-o", "--plan-out", "--json"])
def test_a_read_only_output_location_fails_before_any_work(
    tmp_path, tiny_model, flat_dir, readonly_dir, flag
):
    """It failed with 'internal error: PermissionError' after calibrating, leaving the
    outputs that were written before it."""
    outs = {"-o": tmp_path / "q.onnx", "--plan-out": tmp_path / "p.json", "--json": None}
    outs[flag] = readonly_dir / "out"
    args = [a for k, v in outs.items() if v is not None for a in (k, v)]
    proc = run_cli("quantize", tiny_model, "--calib", flat_dir, *args)
    _one_line(proc, "not writable")
    assert not list(tmp_path.glob("q*")) and not list(tmp_path.glob("p*"))
