"""Shared fixtures: tiny models built with onnx.helper and real photos from installed packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qvision.data.preprocess import METADATA_KEY, Preprocess
from qvision.zoo.sources import package_dir

SKIMAGE = package_dir("skimage")
PHOTO_NAMES = [
    "chelsea.png",
    "astronaut.png",
    "coffee.png",
    "rocket.jpg",
    "horse.png",
    "camera.png",
]

# 32x32 inputs keep every test model tiny and fast.
TINY_PRE = Preprocess(resize=36, crop=32)


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    """Real photographs bundled with scikit-image (horse is RGBA-free binary, camera is grayscale)."""
    paths = [SKIMAGE / "data" / n for n in PHOTO_NAMES]
    missing = [p for p in paths if not p.is_file()]
    assert not missing, f"scikit-image photos missing: {missing}"
    return paths


def tiny_classifier(
    path: Path,
    classes: int = 10,
    batch: int | str = "N",
    size: int = 32,
    preprocess: Preprocess | None = TINY_PRE,
    seed: int = 0,
) -> Path:
    """Conv(3->8, s2) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(8->classes)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.5
    b = rng.standard_normal(8).astype(np.float32) * 0.1
    fw = rng.standard_normal((classes, 8)).astype(np.float32)
    fb = rng.standard_normal(classes).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (fw, "fw"), (fb, "fb"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if preprocess is not None:
        model.metadata_props.add(key=METADATA_KEY, value=preprocess.to_json())
    onnx.save(model, str(path))
    return path


def constant_model(
    path: Path, const: np.ndarray, size: int, preprocess: Preprocess, metadata: dict | None = None
) -> Path:
    """A model that ignores its input (through a zero MatMul, so it still has quantizable
    ops) and outputs ``const`` with a batch axis: known outputs for task adapters."""
    shape = list(const.shape)
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "zero"], ["z"]),
        helper.make_node("Add", ["z", "const"], ["flat"]),
        helper.make_node("Reshape", ["flat", "shape"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "constant",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", *shape])],
        [
            numpy_helper.from_array(np.zeros((3, const.size), np.float32), "zero"),
            numpy_helper.from_array(const.astype(np.float32).ravel(), "const"),
            numpy_helper.from_array(np.array([-1, *shape], np.int64), "shape"),
        ],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    m.metadata_props.add(key=METADATA_KEY, value=preprocess.to_json())
    for k, v in (metadata or {}).items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))
    return path


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    return tiny_classifier(tmp_path / "tiny.onnx")


def make_labelled(root: Path) -> Path:
    """ImageFolder with classes.txt: class 'cat' is index 3, 'rocket' index 7."""
    for cls, names in {
        "cat": ["chelsea.png", "coffee.png"],
        "rocket": ["rocket.jpg", "astronaut.png"],
    }.items():
        (root / cls).mkdir(parents=True)
        for n in names:
            shutil.copy(SKIMAGE / "data" / n, root / cls / n)
    (root / "classes.txt").write_text("a\nb\nc\ncat\nd\ne\nf\nrocket\ng\nh\n")
    return root


def make_flat(root: Path) -> Path:
    """Four real photos in one folder (calibration)."""
    root.mkdir(parents=True)
    for n in PHOTO_NAMES[:4]:
        shutil.copy(SKIMAGE / "data" / n, root / n)
    return root


@pytest.fixture
def labelled_dir(tmp_path, photos) -> Path:
    return make_labelled(tmp_path / "labelled")


@pytest.fixture
def flat_dir(tmp_path, photos) -> Path:
    return make_flat(tmp_path / "flat")


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """The real console entry point in a child process, as a user runs it (``env``: extra
    environment variables)."""
    return subprocess.run(
        [sys.executable, "-m", "qvision", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
        timeout=600,
        check=False,
    )
