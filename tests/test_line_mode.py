"""``resize_mode: line``: text lines at their own aspect ratio (PaddleOCR's recognizer
feed), batches padded to their widest line, and the line options of ``synth-text``."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from PIL import Image

from qvision.api import resolve_preprocess
from qvision.data import iter_batches, open_dataset, parse_preprocess
from qvision.data.preprocess import Preprocess, collate, concat_padded
from qvision.data.synth_text import synth_lines
from qvision.errors import QVisionError
from qvision.model.load import ImageInput
from qvision.runtime.inputs import model_hw

from conftest import run_cli

# white pixels are 1.0 after (p / 255 - 0.5) / 0.5; padding is -1 so it cannot pass for ink
LINE = Preprocess(
    resize=(48, 640),
    resize_mode="line",
    min_width=160,
    width_multiple=32,
    crop=None,
    scale=1 / 255,
    mean=[0.5] * 3,
    std=[0.5] * 3,
    pad_value=-1.0,
)


def _white(w: int, h: int) -> Image.Image:
    return Image.new("RGB", (w, h), (255, 255, 255))


@pytest.mark.parametrize(
    ("size", "width", "ink"),
    [
        ((300, 48), 320, 300),  # 300 wide at 48 rows: rounded up to 320, padded
        ((330, 48), 352, 330),  # 330 -> the next multiple of 32
        ((100, 20), 256, 240),  # ceil(48 * 100 / 20) = 240 -> 256
        ((50, 48), 160, 50),  # short: widened to min_width with padding
        ((2000, 50), 640, 640),  # ceil(1920) is over the cap: squeezed to it
        ((320, 48), 320, 320),  # already a multiple: no padding
    ],
)
def test_line_width_rounds_up_widens_and_caps(size, width, ink):
    out = LINE.apply(_white(*size))
    assert out.shape == (3, 48, width) and LINE.line_width(*size) == width
    assert np.all(out[:, :, :ink] == 1.0) and np.all(out[:, :, ink:] == -1.0)


def test_line_without_minimum_and_multiple_one_is_the_line_itself():
    pre = LINE.model_copy(update={"min_width": None, "width_multiple": 1})
    assert pre.apply(_white(50, 48)).shape == (3, 48, 50)
    assert pre.apply(_white(61, 30)).shape == (3, 48, 98)  # ceil(97.6)


def test_line_sizes_for_shape_checks_and_benchmarks():
    assert LINE.output_hw() is None  # the width varies with each line
    assert LINE.typical_hw() == (48, 160)  # min_width: most short lines
    assert LINE.model_copy(update={"min_width": None}).typical_hw() == (48, 640)
    height = Preprocess(resize=(48, 320), resize_mode="height", crop=None)
    assert height.typical_hw() == height.output_hw() == (48, 320)
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    model.metadata_props.add(key="qvision.preprocess", value=LINE.to_json())
    assert model_hw(model) == (48, 160)  # what `qvision bench` times without --size


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"resize": [48, 320], "min_width": 400}, "min_width 400 is larger than the width cap"),
        ({"resize": 48}, "needs resize \\[height, max width\\]"),
        ({"resize": None}, "needs resize"),
        ({"resize": [48, 320], "width_multiple": 0}, "'width_multiple'"),
        ({"resize": [48, 320], "min_width": -5}, "'min_width'"),
    ],
)
def test_bad_line_settings_are_one_line_errors(spec, match):
    with pytest.raises(QVisionError, match=match) as exc:
        parse_preprocess({"resize_mode": "line", "crop": None, **spec})
    assert "\n" not in str(exc.value) and "Value error" not in str(exc.value)


def test_collate_pads_each_item_to_the_widest():
    a, b = np.ones((3, 4, 5), np.float32), np.full((3, 4, 2), 2, np.float32)
    batch = collate([a, b], pad_value=-1.0)
    assert batch.shape == (2, 3, 4, 5) and batch.dtype == np.float32
    assert np.all(batch[0] == 1) and np.all(batch[1, :, :, :2] == 2)
    assert np.all(batch[1, :, :, 2:] == -1)
    same = [a, a * 3]
    np.testing.assert_array_equal(collate(same), np.stack(same))  # fixed sizes: unchanged
    joined = concat_padded([batch, b[None]], pad_value=7.0)
    assert joined.shape == (3, 3, 4, 5) and np.all(joined[2, :, :, 2:] == 7)
    np.testing.assert_array_equal(concat_padded([batch, batch]), np.concatenate([batch, batch]))


def test_iter_batches_pads_lines_to_the_batch_width(tmp_path):
    """Batches of lines go in order of width (as PaddleOCR batches them), each padded to its
    widest; every sample comes once, with its own tensor."""
    synth_lines(tmp_path / "l", 6, seed=7)
    ds = open_dataset(tmp_path / "l")
    singles = {b.samples[0].path: b.inputs[0] for b in iter_batches(ds, LINE, 1)}
    assert [b.samples[0].path for b in iter_batches(ds, LINE, 1)] == [s.path for s in ds.samples]
    assert len({x.shape[-1] for x in singles.values()}) > 1
    seen, widths = [], []
    for batch in iter_batches(ds, LINE, 3):
        items = [singles[s.path] for s in batch.samples]
        width = max(x.shape[-1] for x in items)
        assert batch.inputs.shape == (3, 3, 48, width)
        for x, got in zip(items, batch.inputs, strict=True):
            np.testing.assert_array_equal(got[:, :, : x.shape[-1]], x)
            assert np.all(got[:, :, x.shape[-1] :] == -1.0)
        seen += [s.path for s in batch.samples]
        widths += [x.shape[-1] for x in items]
    assert sorted(seen) == sorted(s.path for s in ds.samples)
    assert widths == sorted(widths)


def _input(height, width) -> ImageInput:
    return ImageInput("x", "nchw", None, 3, height, width, TensorProto.FLOAT)


def test_line_preprocessing_against_the_model_input():
    model = onnx.ModelProto()
    assert resolve_preprocess(model, LINE, _input(48, None), "m.onnx").resize_mode == "line"
    assert resolve_preprocess(model, LINE, _input(None, None), "m.onnx") is not None
    with pytest.raises(QVisionError, match="lines 48 pixels high but input 'x' takes 32"):
        resolve_preprocess(model, LINE, _input(32, None), "m.onnx")
    with pytest.raises(QVisionError, match="fixed width 320; use resize_mode 'height'"):
        resolve_preprocess(model, LINE, _input(48, 320), "m.onnx")


def test_synth_text_word_and_font_options(tmp_path):
    # the defaults are the draws existing seeds were rendered with (labels from before
    # the options existed; the images matched byte for byte)
    rows = synth_lines(tmp_path / "d", 3, seed=7)
    assert [t for _, t in rows] == ["east Was signal an", "7701 07-02 river sensor", "are From"]
    assert [Image.open(tmp_path / "d" / r).size for r, _ in rows] == [
        (298, 42),
        (513, 54),
        (151, 42),
    ]
    out = tmp_path / "w"
    r = run_cli(
        "data", "synth-text", "--count", "12", "--seed", "7", "--words", "2-5",
        "--font-size", "20-20", "-o", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    labels = (out / "labels.txt").read_text().splitlines()
    assert len(labels) == 12
    assert all(2 <= len(ln.split("\t")[1].split(" ")) <= 5 for ln in labels)
    assert {Image.open(out / ln.split("\t")[0]).height for ln in labels} == {30}  # 1.5 x 20


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--words", "5-2"], "--words 5-2"),
        (["--words", "0-3"], "--words 0-3"),
        (["--font-size", "big"], "--font-size must look like"),
        (["--font-size", "2-30"], "--font-size 2-30"),
        (["--kind", "pages", "--words", "2-3"], "apply to --kind lines"),
    ],
)
def test_synth_text_bad_options(tmp_path, args, needle):
    r = run_cli("data", "synth-text", "--count", "2", "-o", str(tmp_path / "x"), *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert not (tmp_path / "x").exists()


def test_zoo_recognizer_feeds_lines_at_their_own_width():
    from qvision.zoo.registry import get_entry

    pre = get_entry("ppocr-rec").preprocess
    assert (pre.resize_mode, pre.resize, pre.min_width, pre.width_multiple) == (
        "line",
        (48, 1280),
        320,
        32,
    )
    assert pre.typical_hw() == (48, 320)  # benchmarks time the shape they timed before
