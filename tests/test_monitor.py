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
