"""Scale-out on a real Ray cluster on 127.0.0.1: a head (no CPUs of its own) and one worker
node started with `ray start`, as a user starts them. Pieces of work run there give the same
rows as this process; a worker killed mid-sweep costs nothing and duplicates nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from qvision import api
from qvision.cluster import LocalExecutor, ModelFile, make_executor, materialize

from conftest import PHOTO_NAMES, SKIMAGE, run_cli, tiny_classifier

ray = pytest.importorskip("ray")
RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(RAY), *args], capture_output=True, text=True, timeout=180, env=env, check=False
    )


@pytest.fixture(scope="module")
def cluster():
    """RAY_ADDRESS of a head and a worker node on this machine; stopped afterwards. Ray's
    token authentication is off for this loopback-only cluster: Ray reads its mode when it
    is imported, so this process could not switch it on after collection."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="qvr")  # Ray's socket paths must stay short
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "disabled"}
    common = ["--disable-usage-stats", "--object-store-memory", str(150 * 2**20)]
    head = _ray(
        "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
        "--num-cpus", "0", "--include-dashboard", "false", "--temp-dir", temp, *common, env=env,
    )  # fmt: skip
    assert head.returncode == 0, head.stderr[-2000:]
    worker = _ray(
        "start", "--address", address, "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
        *common, env=env,
    )  # fmt: skip
    try:
        assert worker.returncode == 0, worker.stderr[-2000:]
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        _ray("stop", "--force", env=env)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def on_cluster(cluster, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", cluster)
    return cluster


@pytest.fixture
def many_labelled(tmp_path) -> Path:
    """24 real photos in 2 classes (each photo 4 times under another name): pieces that
    last long enough to kill one mid-run."""
    root = tmp_path / "many"
    for k, name in enumerate(PHOTO_NAMES[:4]):
        folder = root / ("cat" if k % 2 == 0 else "rocket")
        folder.mkdir(parents=True, exist_ok=True)
        for copy in range(6):
            shutil.copy(SKIMAGE / "data" / name, folder / f"{copy}-{name}")
    (root / "classes.txt").write_text("a\nb\nc\ncat\nd\ne\nf\nrocket\ng\nh\n")
    return root


def _rows(result) -> list[dict]:
    return [r.model_dump() for r in result.rows]


def test_model_file_round_trip(tmp_path, tiny_model):
    shipped = ModelFile.read(tiny_model)
    here = materialize(shipped)
    assert here != tiny_model and here.read_bytes() == tiny_model.read_bytes()
    assert materialize(shipped) == here  # written once per process
    assert LocalExecutor().ship(tiny_model) == tiny_model


def test_local_executor_keeps_order_and_reports_progress():
    seen = []
    out = LocalExecutor().map(_square, [3, 1, 2], 10, lambda d, t: seen.append((d, t)))
    assert out == [19, 11, 14] and seen == [(1, 3), (2, 3), (3, 3)]


def _square(shared, item):
    return shared + item * item


def test_unknown_executor_is_one_line(tiny_model, labelled_dir):
    r = run_cli("robustness", tiny_model, tiny_model, "--data", labelled_dir, "--executor", "mpi")
    assert r.returncode == 2 and "unknown executor 'mpi'" in r.stderr
    assert "Traceback" not in r.stderr


def test_robustness_rows_on_ray_equal_the_local_run(
    on_cluster, tmp_path, tiny_model, labelled_dir, flat_dir
):
    q = tmp_path / "q.onnx"
    api.quantize(tiny_model, q, flat_dir)
    kw = {"corruptions": ["dark", "fog", "jpeg"], "severities": (1, 3)}
    local = api.robustness(tiny_model, q, labelled_dir, threads=1, **kw)
    progress = []
    remote = api.robustness(
        tiny_model, q, labelled_dir, executor="ray", progress=lambda d, t: progress.append(d), **kw
    )
    assert remote.executor == "ray" and remote.workers == 2 and local.executor == "local"
    assert _rows(remote) == _rows(local)
    assert progress == list(range(1, 8))


def test_worker_killed_mid_sweep_loses_and_repeats_nothing(
    on_cluster, tmp_path, tiny_model, many_labelled, flat_dir
):
    q = tmp_path / "q.onnx"
    api.quantize(tiny_model, q, flat_dir)
    kw = {"corruptions": ["fog", "defocus-blur", "motion-blur", "jpeg"], "severities": (1, 2, 3)}
    local = api.robustness(tiny_model, q, many_labelled, threads=1, **kw)
    killed: list[int] = []
    found = threading.Event()

    def kill_one():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not found.is_set():
            for p in psutil.process_iter(["pid", "cmdline"]):
                line = " ".join(p.info["cmdline"] or [])
                if line.startswith("ray::run_piece"):
                    os.kill(p.info["pid"], signal.SIGKILL)
                    killed.append(p.info["pid"])
                    found.set()
                    return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_one)
    killer.start()
    remote = api.robustness(tiny_model, q, many_labelled, executor="ray", **kw)
    found.set()
    killer.join()
    assert killed, "no worker was found running a piece"
    settings = [(r.corruption, r.severity) for r in remote.rows]
    assert len(settings) == len(set(settings)) == 13
    assert _rows(remote) == _rows(local)


def test_cli_connects_to_ray_address(cluster, tmp_path, tiny_model, labelled_dir, flat_dir):
    q = tmp_path / "q.onnx"
    api.quantize(tiny_model, q, flat_dir)
    out = tmp_path / "r.json"
    args = ["robustness", tiny_model, q, "--data", labelled_dir, "--task", "classification"]
    args += ["--corruptions", "dark", "--severities", "2", "--executor", "ray", "--json", out]
    r = run_cli(*args, env={"RAY_ADDRESS": cluster})
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["executor"] == "ray" and result["workers"] == 2
    local = api.robustness(tiny_model, q, labelled_dir, corruptions=["dark"], severities=(2,))
    assert result["rows"] == [r.model_dump(mode="json") for r in local.rows]


def test_executor_ray_without_a_cluster_answer_is_one_line(tmp_path, tiny_model, labelled_dir):
    args = ["robustness", tiny_model, tiny_model, "--data", labelled_dir, "--executor", "ray"]
    r = run_cli(*args, env={"RAY_ADDRESS": f"127.0.0.1:{_free_port()}"})
    assert r.returncode == 2 and "Ray cluster" in r.stderr and "Traceback" not in r.stderr


def test_make_executor_local_takes_threads():
    assert make_executor("local", 3).threads == 3


def test_eval_on_ray_equals_the_local_run(
    on_cluster, tmp_path, tiny_model, many_labelled, flat_dir
):
    q = tmp_path / "q.onnx"
    api.quantize(tiny_model, q, flat_dir)
    local = api.evaluate(q, many_labelled, reference=tiny_model, threads=1, batch_size=4)
    seen = []
    remote = api.evaluate(
        q,
        many_labelled,
        reference=tiny_model,
        batch_size=4,
        executor="ray",
        progress=lambda d, t: seen.append((d, t)),
    )
    assert (remote.executor, remote.workers, remote.n) == ("ray", 2, 24)
    for field in ("metrics", "metrics_ci95", "agreement", "fidelity", "harm", "dataset"):
        assert getattr(remote, field) == getattr(local, field), field
    assert seen[-1] == (24, 24) and len(seen) > 1


def test_sweep_on_ray_equals_the_local_run(on_cluster, tmp_path, labelled_dir, flat_dir):
    tiny_classifier(tmp_path / "a.onnx")
    tiny_classifier(tmp_path / "b.onnx", seed=3)
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(
        f"models: [a.onnx, b.onnx]\ncalib: {flat_dir}\ndata: {labelled_dir}\n"
        "targets: [ort-cpu-vnni, ort-cpu-avx2]\nalgorithms: [none, 'cle,bias-correction']\n"
    )
    local = api.sweep(cfg, tmp_path / "local", threads=1)
    remote = api.sweep(cfg, tmp_path / "remote", executor="ray")
    assert (remote.executor, remote.workers, len(remote.rows)) == ("ray", 2, 8)

    def same(rows):
        return [r.model_dump(exclude={"quantize_seconds", "output"}) for r in rows]

    assert same(remote.rows) == same(local.rows)
    for a, b in zip(local.rows, remote.rows, strict=True):
        assert Path(a.output).read_bytes() == Path(b.output).read_bytes()


def test_autotune_trials_on_ray_choose_as_the_local_run(on_cluster, tmp_path, photos):
    from qvision.quant.config import TuneOptions

    data = tmp_path / "photos"
    data.mkdir()
    for p in photos:
        shutil.copy(p, data / p.name)
    src = tiny_classifier(tmp_path / "t.onnx", classes=10, seed=0)
    kw = {
        "weights": "int4",
        "algos": "none",
        "layer_bits": {"Conv_0": 2, "Gemm_4": 2},
        "tune": TuneOptions(0.0, data),
    }
    local = api.quantize(src, tmp_path / "local.onnx", data, threads=1, **kw).tuning
    remote = api.quantize(src, tmp_path / "remote.onnx", data, executor="ray", **kw).tuning
    assert (remote.executor, remote.workers) == ("ray", 2)

    def same(t):
        return [r.model_dump(exclude={"latency_ms", "seconds"}) for r in t.trials]

    assert len(local.trials) > 2 and same(remote) == same(local)
    assert (remote.chosen, remote.met, remote.message) == (local.chosen, local.met, local.message)
    assert (tmp_path / "local.onnx").read_bytes() == (tmp_path / "remote.onnx").read_bytes()
