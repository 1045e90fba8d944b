"""Same model, data and settings give a byte-identical model and plan (time stamps live in
the manifest only), for the default pipeline and for each learned algorithm. Each run is
its own process with its own string-hash seed, as two users' runs are."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import tiny_classifier

RUNS = {
    "default": [],
    "cle-bias-correction": ["--algo", "cle,bias-correction"],
    "act-search": ["--algo", "bias-correction,act-search"],
    "adaround": ["--algo", "adaround", "--algo-option", "adaround.iters=5"],
    "int4-brecq": [
        "--weights", "int4", "--algo-option", "brecq.iters=5", "--algo-option", "brecq.views=1",
    ],
}  # fmt: skip


@pytest.mark.parametrize("name", list(RUNS))
def test_quantize_twice_gives_the_same_bytes(tmp_path, flat_dir, name):
    if name in ("adaround", "int4-brecq"):
        pytest.importorskip("torch")
    model = tiny_classifier(tmp_path / "m.onnx")
    outputs = []
    # hash seeds 0 and 1 iterate a set of the tiny model's tensor names in different orders
    for run, seed in (("a", "0"), ("b", "1")):
        out, plan = tmp_path / f"{run}.onnx", tmp_path / f"{run}.json"
        args = ["quantize", model, "-o", out, "--calib", flat_dir, "--plan-out", plan, *RUNS[name]]
        done = subprocess.run(
            [sys.executable, "-m", "qvision", *map(str, args)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outputs.append((out.read_bytes(), plan.read_bytes()))
    assert outputs[0][0] == outputs[1][0], "model bytes differ"
    assert outputs[0][1] == outputs[1][1], "plan bytes differ"
