import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from qvision.data import PRESETS, Preprocess, load_image, parse_preprocess
from qvision.errors import QVisionError


def test_imagenet_preset_equals_torchvision(photos):
    tv = T.Compose(
        [
            T.Resize(256),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    for p in photos[:4]:
        img = load_image(p)
        ours = PRESETS["imagenet"].apply(img)
        assert ours.shape == (3, 224, 224) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, tv(img).numpy(), atol=1e-5)


def test_tf_preset_is_x_minus_127_over_128(photos):
    img = load_image(photos[0])
    out = PRESETS["tf"].apply(img)
    ref = T.Compose([T.Resize(256), T.CenterCrop(224), T.PILToTensor()])(img).float()
    np.testing.assert_allclose(out, ((ref - 127) / 128).numpy(), atol=1e-6)


def test_bgr_nhwc_gray():
    img = Image.new("RGB", (10, 10), (10, 20, 30))
    bgr = Preprocess(
        resize=None,
        crop=None,
        scale=1,
        mean=[0, 0, 0],
        std=[1, 1, 1],
        channel_order="bgr",
        layout="nhwc",
    )
    assert bgr.apply(img)[0, 0].tolist() == [30, 20, 10]
    gray = Preprocess(resize=None, crop=None, scale=1, mean=[0], std=[1], channel_order="gray")
    assert gray.apply(img).shape == (1, 10, 10)


def test_height_mode_keeps_aspect_and_pads():
    img = Image.new("RGB", (100, 20), (255, 255, 255))
    pre = Preprocess(
        resize=(48, 320),
        resize_mode="height",
        crop=None,
        scale=1 / 255,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        pad_value=0.0,
    )
    out = pre.apply(img)
    assert out.shape == (3, 48, 320)
    assert np.allclose(out[:, :, :240], 1.0) and np.allclose(out[:, :, 240:], 0.0)


def test_letterbox_fits_and_pads():
    img = Image.new("RGB", (200, 100), (0, 0, 0))
    pre = Preprocess(
        resize=(64, 64),
        resize_mode="letterbox",
        crop=None,
        scale=1,
        mean=[0] * 3,
        std=[1] * 3,
        pad_value=-1,
    )
    out = pre.apply(img)
    assert out.shape == (3, 64, 64)
    assert np.all(out[:, :32] == 0) and np.all(out[:, 32:] == -1)


def test_exact_resize_and_output_hw():
    pre = Preprocess(resize=(30, 40), resize_mode="exact", crop=None)
    assert pre.apply(Image.new("RGB", (7, 9))).shape == (3, 30, 40)
    assert pre.output_hw() == (30, 40)
    assert Preprocess(crop=None).output_hw() is None


def test_parse_from_files_and_json(tmp_path):
    j = tmp_path / "p.json"
    j.write_text(json.dumps({"resize": 64, "crop": 56, "mean": [0, 0, 0], "std": [1, 1, 1]}))
    assert parse_preprocess(str(j)).crop == 56
    y = tmp_path / "p.yaml"
    y.write_text("resize: [48, 320]\nresize_mode: height\ncrop: null\nchannel_order: bgr\n")
    pre = parse_preprocess(str(y))
    assert pre.resize == (48, 320) and pre.channel_order == "bgr"
    assert parse_preprocess(PRESETS["tf"].to_json()) == PRESETS["tf"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("resize: 10\nbogus: 1\n", "bogus"),
        ("std: [0, 1, 1]\n", "std"),
        ("- a\n- b\n", "mapping"),
        ("resize: [\n", "cannot parse"),
    ],
)
def test_bad_preprocess_files(tmp_path, text, match):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(QVisionError, match=match) as exc:
        parse_preprocess(str(f))
    assert str(f) in str(exc.value)


def test_crop_larger_than_image_is_an_error():
    with pytest.raises(QVisionError, match="larger"):
        Preprocess(resize=None, crop=64).apply(Image.new("RGB", (32, 32)))


def test_torch_is_the_cuda_build_or_cpu():
    # The pinned torch runs on the CPU here; keep that true for the zoo parity tests.
    assert torch.zeros(1).device.type == "cpu"
