"""The deployment monitor's core on a real INT8 model and real photos: no alert on the
calibration distribution, a drift alert soon after the stream turns dark."""

import numpy as np
import pytest

from qvision import api
from qvision.data import image_folder, iter_batches
from qvision.monitor import Monitor, Thresholds


@pytest.fixture
def deployed(tmp_path, tiny_model, photos):
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in photos:
        (folder / p.name).write_bytes(p.read_bytes())
    q = tmp_path / "q.onnx"
    api.quantize(tiny_model, q, folder)
    proto, inp = api.open_model(tiny_model)
    pre = api.resolve_preprocess(proto, None, inp, tiny_model)
    x = np.concatenate([b.inputs for b in iter_batches(image_folder(folder), pre, 4)])
    return tiny_model, q, x


def test_no_alert_on_calibration_like_images_and_drift_on_dark_ones(deployed):
    fp32, int8, x = deployed
    t = Thresholds(window=3 * len(x), min_images=len(x))
    clean = Monitor(int8, fp32, x, sample=0.5, thresholds=t)
    for _ in range(3):
        clean.observe(x)
    assert clean.alerts == [] and clean.state()["images"] == 3 * len(x)
    assert clean.outputs[0].shape[0] == len(x)  # the INT8 outputs a server answers with
    assert clean.state()["agreement_n"] == 3 * len(x) // 2
    dark = Monitor(int8, fp32, x, sample=0.5, thresholds=t)
    # preprocessed pixels darkened to a quarter: (p * 0.25 - mean) / std, in tensor units
    mean = np.array([0.485, 0.456, 0.406], np.float32)[None, :, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[None, :, None, None]
    darker = (((x * std + mean) * 0.25) - mean) / std
    for _ in range(3):
        dark.observe(darker.astype(np.float32))
    kinds = {a.kind: a.at_image for a in dark.alerts}
    assert "drift" in kinds and kinds["drift"] <= 2 * len(x), dark.alerts


def test_the_monitor_needs_a_qdq_model(deployed):
    from qvision.errors import QVisionError

    fp32, _, x = deployed
    with pytest.raises(QVisionError, match="not a QDQ INT8 model"):
        Monitor(fp32, fp32, x)
    with pytest.raises(QVisionError, match="--sample"):
        Monitor(deployed[1], fp32, x, sample=0)


def test_metrics_endpoint_moves_while_images_flow(deployed):
    """Scraped over 127.0.0.1 between batches: the image counter and the gauges move."""
    import socket
    import urllib.request

    from qvision.monitor.metrics import Metrics

    fp32, int8, x = deployed
    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    served = Metrics(f"127.0.0.1:{port}")
    mon = Monitor(int8, fp32, x, sample=0.5)

    def scrape() -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        rows = [r.split() for r in text.decode().splitlines() if r.startswith("qvision_")]
        return {r[0]: float(r[1]) for r in rows if len(r) == 2}

    try:
        seen = []
        for _ in range(3):
            served.update(mon, mon.observe(x))
            seen.append(scrape())
    finally:
        served.close()
    counts = [s["qvision_images_total"] for s in seen]
    assert counts == [len(x), 2 * len(x), 3 * len(x)]
    assert seen[-1]["qvision_sampled_images_total"] == 3 * len(x) // 2
    assert 0 <= seen[-1]["qvision_agreement"] <= 1


def test_cli_exit_code_and_json(tmp_path, deployed, photos):
    import json

    from conftest import run_cli

    fp32, int8, _ = deployed
    calib = int8.parent / "photos"
    out = tmp_path / "m.json"
    r = run_cli("monitor", int8, "--reference", fp32, "--images", calib, "--calib", calib,
                "--json", out)  # fmt: skip
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["kind"] == "monitor" and res["images"] == len(photos) and res["alerts"] == []
    r = run_cli("monitor", int8, "--reference", fp32, "--images", calib, "--calib", calib,
                "--metrics", "nowhere")  # fmt: skip
    assert r.returncode == 2 and "HOST:PORT" in r.stderr
