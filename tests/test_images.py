import io

import numpy as np
import pytest
from PIL import Image

from qvision.data import load_image
from qvision.errors import QVisionError


@pytest.fixture
def chelsea(photos):
    return Image.open(photos[0]).convert("RGB")


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "LA", "I;16", "1"])
def test_any_mode_becomes_rgb(tmp_path, chelsea, mode):
    img = (
        chelsea.convert(mode)
        if mode != "I;16"
        else Image.fromarray(np.asarray(chelsea.convert("L"), dtype=np.uint16) * 257)
    )
    fmt = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
    path = tmp_path / f"img.{fmt.lower()}"
    img.save(path, fmt)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == chelsea.size


def test_alpha_is_composited_over_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    path = tmp_path / "t.png"
    rgba.save(path)
    assert np.asarray(load_image(path))[0, 0].tolist() == [255, 255, 255]


def test_palette_with_transparency(tmp_path, chelsea):
    img = chelsea.convert("P")
    path = tmp_path / "p.gif"
    img.save(path, transparency=0)
    assert load_image(path).mode == "RGB"


def test_exif_orientation_is_applied(tmp_path, chelsea):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "rot.jpg"
    chelsea.save(path, exif=exif.tobytes())
    w, h = chelsea.size
    assert load_image(path).size == (h, w)


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (2000, 1000)).save(path)
    with pytest.raises(QVisionError, match="decompression bomb"):
        load_image(path, max_pixels=1_000_000)


def test_corrupt_and_non_images(tmp_path, photos):
    data = photos[3].read_bytes()  # rocket.jpg
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(data[: len(data) // 3])
    with pytest.raises(QVisionError, match="truncated") as exc:
        load_image(trunc)
    assert str(trunc) in str(exc.value)
    fake = tmp_path / "fake.jpg"
    fake.write_text("not a jpeg")
    with pytest.raises(QVisionError, match="not a readable image"):
        load_image(fake)
    garbled = tmp_path / "garbled.png"
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "PNG")
    raw = bytearray(buf.getvalue())
    raw[60:80] = b"\x00" * 20
    garbled.write_bytes(bytes(raw))
    with pytest.raises(QVisionError):
        load_image(garbled)
