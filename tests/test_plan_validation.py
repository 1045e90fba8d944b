"""An edited plan is checked against the model and its target before anything is written:
each problem is a one-line error naming the plan file, exit 2, no output."""

import json

import pytest

from qvision import api
from qvision.errors import QVisionError

from conftest import run_cli


@pytest.fixture
def saved(tmp_path, tiny_model, flat_dir):
    plan = tmp_path / "plan.json"
    api.quantize(tiny_model, tmp_path / "q.onnx", flat_dir, plan_out=plan, check_images=0)
    return json.loads(plan.read_text())


def _edited(tmp_path, plan: dict, edit) -> str:
    p = json.loads(json.dumps(plan))
    edit(p)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(p))
    return str(path)


def _weight(p):
    return p["weights"]["w"]


def _act(p):
    return next(iter(p["activations"].values()))


EDITS = {
    "3-bit weights are not supported": lambda p: _weight(p).update(bits=3),
    "scale -0.1 (scales must be finite and above 0)": lambda p: _weight(p)["scale"].__setitem__(
        0, -0.1
    ),
    "scale 0.0": lambda p: _act(p).update(scale=[0.0]),
    "scale nan": lambda p: _act(p).update(scale=[float("nan")]),
    "zero point 300 outside 0..255": lambda p: _act(p).update(zero_point=[300]),
    "7 scales for 8 channels on axis 0": lambda p: _weight(p).update(
        scale=_weight(p)["scale"][:7], zero_point=_weight(p)["zero_point"][:7]
    ),
    "'nope' is not a node of the model": lambda p: p["nodes"].update(
        nope={"op_type": "Conv", "action": "quantize"}
    ),
    "activations['ghost']: not a tensor of the model": lambda p: p["activations"].update(
        ghost=_act(p)
    ),
    "16-bit uint16, but target": lambda p: _act(p).update(dtype="uint16", bits=16),
}


@pytest.mark.parametrize("problem", list(EDITS))
def test_each_problem_is_named_before_any_output(tmp_path, tiny_model, saved, problem):
    plan = _edited(tmp_path, saved, EDITS[problem])
    out = tmp_path / "out.onnx"
    with pytest.raises(QVisionError) as err:
        api.quantize(tiny_model, out, plan=plan)
    assert problem in str(err.value) and "edited.json" in str(err.value)
    assert not out.exists()


def test_an_untouched_plan_replays_and_the_cli_exits_2_on_a_bad_one(tmp_path, tiny_model, saved):
    ok = _edited(tmp_path, saved, lambda p: None)
    assert api.quantize(tiny_model, tmp_path / "ok.onnx", plan=ok).quantized_nodes > 0
    bad = _edited(tmp_path, saved, EDITS["zero point 300 outside 0..255"])
    r = run_cli("quantize", tiny_model, "-o", tmp_path / "bad.onnx", "--plan", bad)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "zero point 300" in (r.stderr + r.stdout) and not (tmp_path / "bad.onnx").exists()


def test_plan_nodes_carry_labels_that_replay_ignores(tmp_path, tiny_model, saved):
    """The tiny model's nodes are unnamed: the plan names them Conv_0 ... and labels them by
    position and shape for a person reading it; an edited label changes nothing."""
    labels = {name: d.get("label") for name, d in saved["nodes"].items()}
    assert labels["Conv_0"] == "Conv #1 3×3 3→8" and labels["Gemm_4"] == "Gemm #1 8→10"
    edited = _edited(tmp_path, saved, lambda p: p["nodes"]["Conv_0"].update(label="mine"))
    assert api.quantize(tiny_model, tmp_path / "r.onnx", plan=edited).quantized_nodes > 0


def test_ordinary_option_mistakes_are_one_line_errors(tmp_path, tiny_model, flat_dir):
    args = ("quantize", tiny_model, "-o", tmp_path / "q.onnx", "--calib", flat_dir)
    for extra, needle in (
        (("--method", "foo"), "unknown --method 'foo'"),
        (("--keep-float", "nosuch"), "--keep-float: 'nosuch' is not a node"),
        (("--layer-bits", "ghost=4"), "--layer-bits: 'ghost' is not a node"),
    ):
        r = run_cli(*args, *extra)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr
    assert run_cli(*args, "--threads", "0").returncode == 2
    assert not (tmp_path / "q.onnx").exists()
