"""quantize's quick shift check: label-free, names a shift only when INT8 clearly departs."""

import shutil

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qvision import api
from qvision.data import image_folder, iter_batches
from qvision.eval.robustness import corrupt
from qvision.eval.robustness.check import QUICK_SHIFTS, shift_check
from qvision.quant import shiftsafe
from qvision.records import ShiftCheck, ShiftRow

from conftest import TINY_PRE


def _dark_sensitive(fp32_path, threshold: float) -> bytes:
    """The float model, plus a large score for class 0 on inputs darker than ``threshold``:
    a stand-in for an INT8 model whose ranges do not hold on dark images."""
    m = onnx.load(str(fp32_path))
    g = m.graph
    g.node.extend(
        [
            helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Less", ["mean", "t"], ["is_dark"]),
            helper.make_node("Cast", ["is_dark"], ["dark_f"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["dark_f", "one"], ["dark_col"]),
            helper.make_node("Mul", ["dark_col", "bump"], ["push"]),
            helper.make_node("Add", ["logits", "push"], ["pushed"]),
        ]
    )
    bump = np.zeros((1, 10), np.float32)
    bump[0, 0] = 1000
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array(threshold, np.float32), "t"),
            numpy_helper.from_array(np.array([1], np.int64), "one"),
            numpy_helper.from_array(bump, "bump"),
        ]
    )
    out = g.output[0]
    out.name = "pushed"
    m.opset_import[0].version = 13
    onnx.checker.check_model(m)
    return m.SerializeToString()


def test_shift_check_names_only_the_shift_that_departs(tmp_path, tiny_model, photos):
    # 16 images (the default at 224x224): enough to resolve a model that fails every dark image
    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(16):
        p = photos[i % len(photos)]
        shutil.copy(p, folder / f"{i:02d}-{p.name}")
    ds = image_folder(folder)
    mean = lambda t: [float(b.inputs.mean()) for b in iter_batches(ds, TINY_PRE, 1, transform=t)]  # noqa: E731
    clean, dark = mean(None), mean(corrupt("dark", 3))
    assert max(dark) < min(clean)
    int8 = _dark_sensitive(tiny_model, (max(dark) + min(clean)) / 2)
    res = shift_check(tiny_model, int8, ds, TINY_PRE, "input")
    assert res.images == 16 and res.clean == 1.0 and res.clean_ci[0] < 1
    by = {r.shift: r for r in res.rows}
    assert [(r.shift, r.severity) for r in res.rows] == list(QUICK_SHIFTS)
    assert by["dark"].agreement < 0.3 and by["dark"].departs and by["dark"].n == 16
    assert not any(r.departs for r in res.rows if r.shift != "dark")
    assert "dark 3" in res.warning and "bright" not in res.warning
    # on 4 images even that is not resolved: nothing is named
    few = shift_check(tiny_model, int8, image_folder(folder), TINY_PRE, "input", images=4)
    assert few.rows[0].agreement == 0 and not any(r.departs for r in few.rows)
    assert few.warning is None


def test_quantize_reports_the_check_and_can_skip_it(tmp_path, tiny_model, flat_dir):
    res = api.quantize(tiny_model, tmp_path / "q.onnx", flat_dir)
    c = res.shift_check
    assert c is not None and c.images == 4 and len(c.rows) == len(QUICK_SHIFTS)
    assert c.measure == "top-1 agreement" and "shift-check" in res.seconds
    assert (
        api.quantize(tiny_model, tmp_path / "q2.onnx", flat_dir, check_images=0).shift_check is None
    )


def test_without_a_task_the_check_compares_output_sqnr(tmp_path, flat_dir):
    from qdq_models import mobile_block

    src = tmp_path / "block.onnx"
    onnx.save(mobile_block(), str(src))  # a feature map out, no task in its metadata
    c = api.quantize(src, tmp_path / "q.onnx", flat_dir).shift_check
    assert c.task is None and c.measure == "output SQNR" and c.clean is None
    assert c.clean_sqnr_db > 10 and all(r.sqnr_db is not None for r in c.rows)
    assert all(r.agreement is None and r.agreement_ci is None for r in c.rows)
    # a task whose reader cannot take a plain folder of photos: skipped, and why
    seg = api.quantize(src, tmp_path / "q2.onnx", flat_dir, task="segmentation")
    assert seg.shift_check is None
    assert any("shift check skipped" in w and "segmentation" in w for w in seg.warnings)


def test_shift_safe_method_choice(tmp_path, tiny_model, flat_dir):
    res = api.quantize(tiny_model, tmp_path / "q.onnx", flat_dir)
    mc = res.method_choice
    assert mc.default == "mean-minmax" and set(mc.mean_sqnr_db) == {"mean-minmax", "minmax"}
    best = max(mc.mean_sqnr_db, key=mc.mean_sqnr_db.get)
    gap = mc.mean_sqnr_db[best] - mc.mean_sqnr_db["mean-minmax"]
    assert mc.chosen == res.method == (best if gap > shiftsafe.TIE_DB else "mean-minmax")
    # the chosen model is the one that method, given, makes
    given = api.quantize(tiny_model, tmp_path / "g.onnx", flat_dir, method=mc.chosen)
    assert given.method_choice is None and given.shift_check is not None
    assert (tmp_path / "q.onnx").read_bytes() == (tmp_path / "g.onnx").read_bytes()
    # analyze explains the plan quantize writes
    explained = api.analyze(tiny_model, flat_dir, limit=4, sensitivity=False)
    assert explained.method == mc.chosen and explained.method_choice.chosen == mc.chosen
    # no check, no choice: the target's method
    off = api.quantize(tiny_model, tmp_path / "o.onnx", flat_dir, check_images=0)
    assert off.method_choice is None and off.method == "mean-minmax"


def _check(sqnr: list[float | None]) -> ShiftCheck:
    rows = [
        ShiftRow(
            shift=s, severity=3, agreement=None, agreement_ci=None, n=8, departs=False, sqnr_db=v
        )
        for (s, _), v in zip(QUICK_SHIFTS, sqnr[1:], strict=True)
    ]
    return ShiftCheck(
        task=None, measure="output SQNR", images=8, clean=None, clean_ci=None,
        clean_sqnr_db=sqnr[0], rows=rows,
    )  # fmt: skip


def test_choose_keeps_the_default_unless_clearly_beaten():
    # a ruined setting counts as 0 dB, however negative: one setting cannot outvote the rest
    default = _check([20.0, 0.0, 15.0, 15.0, 10.0])
    assert shiftsafe.mean_sqnr(_check([20.0, -30.0, 15.0, 15.0, 10.0])) == 12.0
    close = _check([20.5, 0.5, 15.5, 15.5, 10.5])  # 0.5 dB better: a tie, the default stays
    assert shiftsafe.choose({"a": default, "b": close}, "a").chosen == "a"
    better = _check([20.0, 12.0, 15.0, 15.0, None])  # identical outputs count as 60 dB
    pick = shiftsafe.choose({"a": default, "b": better}, "a")
    assert pick.chosen == "b" and pick.mean_sqnr_db["b"] == 24.4
    assert "worst dark 3" in pick.reason


def test_calibrating_on_shifted_copies(tmp_path, tiny_model, flat_dir):
    from qvision.data import image_folder
    from qvision.quant.calibrate.shifts import with_shifts
    from qvision.quant.plan import QuantPlan

    ds = image_folder(flat_dir)
    more, transform = with_shifts(ds, 2)
    assert len(more) == 3 * len(ds) and more.samples[: len(ds)] == ds.samples
    shifted = [np.asarray(b.inputs) for b in iter_batches(more, TINY_PRE, 1, transform=transform)]
    plain = [np.asarray(b.inputs) for b in iter_batches(ds, TINY_PRE, 1)]
    assert all(np.array_equal(a, b) for a, b in zip(shifted, plain, strict=False))  # originals
    assert not any(np.array_equal(shifted[len(ds) + i], plain[i]) for i in range(len(ds)))

    runs = []
    for name, copies in (("a", 0), ("b", 2), ("c", 2)):
        res = api.quantize(
            tiny_model, tmp_path / f"{name}.onnx", flat_dir, plan_out=tmp_path / f"{name}.json",
            calib_shifts=copies, check_images=0,
        )  # fmt: skip
        assert res.calib_images == len(ds)
        runs.append(QuantPlan.load(tmp_path / f"{name}.json"))
    assert runs[1].ranges != runs[0].ranges  # the shifted copies moved some ranges
    assert (tmp_path / "b.json").read_bytes() == (tmp_path / "c.json").read_bytes()
