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


def test_quantize_stores_the_baseline_and_monitor_reads_it(deployed, tmp_path):
    """No --calib needed: the manifest carries the calibration images' statistics, and it
    must describe this model (a changed model is refused)."""
    from qvision.errors import QVisionError
    from qvision.monitor.baseline import from_manifest
    from qvision.provenance import manifest_path

    fp32, int8, x = deployed
    base = from_manifest(int8)
    assert base.images == len(x) and base.task == "classification"
    assert len(base.features) == len(x) and len(base.features[0]) == 2 * x.shape[1]
    stored = Monitor(int8, fp32)  # from the manifest
    measured = Monitor(int8, fp32, x)  # measured here on the same images
    assert np.allclose(stored.ref_features, measured.ref_features, atol=1e-5)
    assert np.allclose(stored.baseline, measured.baseline, atol=1e-6)
    import onnx

    other = tmp_path / "other.onnx"
    changed = onnx.load(str(int8))
    onnx.helper.set_model_props(changed, {"note": "edited after quantize"})
    onnx.save(changed, str(other))
    manifest_path(other).write_bytes(manifest_path(int8).read_bytes())
    with pytest.raises(QVisionError, match="describes another model"):
        Monitor(other, fp32)
    manifest_path(other).unlink()
    with pytest.raises(QVisionError, match="--calib"):
        Monitor(other, fp32)


def test_thresholds_are_checked():
    from qvision.errors import QVisionError

    with pytest.raises(QVisionError, match="min-images"):
        Thresholds(window=10, min_images=20)
    with pytest.raises(QVisionError, match="agreement"):
        Thresholds(agreement=1.5)


def test_box_f1_matches_one_to_one_by_class():
    from qvision.eval.tasks.detection import box_f1

    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    b = np.array([[1, 1, 10, 10], [20, 20, 30, 30]], float)
    same = np.array([0, 1, 0]), np.array([0, 1])
    # two of a's three boxes match b's two (the duplicate matches nothing): 2*2/(3+2)
    assert box_f1(a, same[0], b, same[1]) == pytest.approx(0.8)
    assert box_f1(a[:2], np.array([1, 0]), b, same[1]) == 0.0  # classes swapped
    assert box_f1(a[:0], same[0][:0], b[:0], same[1][:0]) == 1.0  # both empty
    assert box_f1(a[:1], same[0][:1], b[:0], same[1][:0]) == 0.0


def test_task_scores_compare_int8_with_fp32_per_image():
    from qvision.monitor.agreement import make_scorer, mean_interval

    seg = make_scorer("segmentation", {})
    m = np.zeros((1, 2, 4, 4), np.float32)
    m[0, 1, :2] = 1  # class 1 on the top half
    shifted = np.zeros_like(m)
    shifted[0, 1, :3] = 1  # and one row more
    # class 1: IoU 8/12; class 0: 4/8
    assert seg.score([m], [shifted]) == pytest.approx((8 / 12 + 4 / 8) / 2)
    assert seg.score([m], [m]) == 1.0
    rec = make_scorer("ocr-rec", {"character": "a\nb\nc"})
    # CTC over blank, a, b, c (+ a space class): "abc" against "abb"
    steps = lambda ids: np.eye(5, dtype=np.float32)[ids][None]  # noqa: E731
    assert rec.score([steps([1, 0, 2, 0, 3])], [steps([1, 0, 2, 0, 2])]) == pytest.approx(2 / 3)
    top = make_scorer("classification", {})
    assert top.binary and top.score([np.array([[0.1, 0.9]])], [np.array([[0.2, 0.8]])]) == 1.0
    lo, hi = mean_interval([0.9, 0.8, 1.0, 0.7], binary=False)
    assert lo < 0.85 < hi <= 1.0


def test_follow_reads_images_as_they_arrive(deployed, photos, tmp_path):
    """A folder that grows while the monitor follows it: every image is seen once, the
    half-written (dot) file is not read, and the run ends after the idle time."""
    import shutil
    import threading
    import time

    fp32, int8, _ = deployed
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    shutil.copy(photos[0], incoming / "a.jpg")

    def arrive():
        for i, p in enumerate(photos[1:3]):
            time.sleep(0.4)
            (incoming / f".part{i}.jpg").write_bytes(p.read_bytes()[:100])  # being written
            shutil.copy(p, incoming / f"b{i}.jpg")

    writer = threading.Thread(target=arrive)
    writer.start()
    page = tmp_path / "page.html"
    res = api.monitor(int8, fp32, incoming, follow=True, poll=0.1, idle_stop=2.0, html=page)
    writer.join()
    assert res.images == 3 and res.skipped == []
    text = page.read_text()
    assert "No alert in 3 images" in text and "top-1 agreement" in text


def test_saturation_alerts_on_a_lasting_rise_not_on_one_odd_image(deployed):
    """Clipping is judged per image: one blown-out image in the window lifts the mean share
    past the threshold but is no trend; a stream of them is."""
    fp32, int8, x = deployed
    t = Thresholds(window=3 * len(x), min_images=3 * len(x))
    odd = Monitor(int8, fp32, x, sample=0.5, thresholds=t)
    once = x.copy()
    once[0] *= 8
    odd.observe(np.concatenate([x, once, x]))
    assert (odd.state()["saturation"] - odd.baseline).max() > t.saturation  # the mean rose
    assert "saturation" not in {a.kind for a in odd.alerts}, odd.alerts
    hot = Monitor(int8, fp32, x, sample=0.5, thresholds=t)
    hot.observe(np.concatenate([x * 8] * 3))
    kinds = {a.kind: a.at_image for a in hot.alerts}
    assert kinds.get("saturation") == 3 * len(x), hot.alerts
