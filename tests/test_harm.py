"""Per-class and per-group harm of a model against its float reference: the paired score
interval on hand-computed cases, per-class records where disagreement is built in, the
--groups CSV (each bad file one line, exit 2, before any model runs) and the report's
section."""

import json
import math
import re

import numpy as np
import pytest

from qvision import api
from qvision.data.datasets import open_dataset
from qvision.data.groups import read_groups
from qvision.errors import QVisionError
from qvision.eval.tasks.harm import DISAGREEMENTS, HarmMeter
from qvision.intervals import Z95, paired_difference_score
from qvision.report.harm import harm_section
from qvision.report.html import ReportInputs, model_card, render

from conftest import TINY_PRE, constant_model, make_flat, make_labelled, run_cli, tiny_classifier

Z2 = Z95**2


@pytest.mark.parametrize("n", [1, 2, 9, 30])
def test_score_interval_when_nothing_changed_is_z2_over_n_plus_z2(n):
    lo, hi = paired_difference_score(0, 0, n)
    assert hi == pytest.approx(Z2 / (n + Z2), abs=1e-9) and lo == pytest.approx(-hi, abs=1e-9)
    assert paired_difference_score(0, 0, 1)[1] == pytest.approx(0.7935, abs=1e-4)


@pytest.mark.parametrize("n", [1, 3, 9])
def test_score_interval_when_every_image_is_lost(n):
    # Tango's statistic reduces to sqrt(n (1 - d) / (1 + d)) here: solved by hand
    lo, hi = paired_difference_score(n, 0, n)
    assert hi == 1 and lo == pytest.approx((n - Z2) / (n + Z2), abs=1e-9)
    glo, ghi = paired_difference_score(0, n, n)  # every image gained: the mirror image
    assert (glo, ghi) == pytest.approx((-hi, -lo), abs=1e-9)


def test_one_image_lost_of_one_resolves_nothing():
    lo, hi = paired_difference_score(1, 0, 1)
    assert lo == pytest.approx((1 - Z2) / (1 + Z2), abs=1e-9) and lo < 0 and hi == 1
    assert paired_difference_score(0, 0, 0) == (-1.0, 1.0)


def test_score_interval_holds_its_coverage_at_small_n():
    """Exact coverage over every outcome of n = 9 paired images, for classes that lose
    images to quantization (where Wald-type intervals fall to ~86 %)."""
    n = 9
    for p_lost, p_gained in [(0.2, 0.0), (0.1, 0.0), (0.2, 0.01), (0.05, 0.03), (0.0, 0.0)]:
        truth, covered = p_lost - p_gained, 0.0
        p_same = 1 - p_lost - p_gained
        for b in range(n + 1):
            for c in range(n + 1 - b):
                prob = (
                    math.factorial(n)
                    / (math.factorial(b) * math.factorial(c) * math.factorial(n - b - c))
                    * p_lost**b
                    * p_gained**c
                    * p_same ** (n - b - c)
                )
                lo, hi = paired_difference_score(b, c, n)
                covered += prob * (lo - 1e-12 <= truth <= hi + 1e-12)
        assert covered >= 0.94, (p_lost, p_gained, covered)


def _logits(classes: list[int], k: int = 5) -> np.ndarray:
    return np.eye(k)[classes] * 5.0


def test_meter_ranks_by_change_then_discordant_then_index():
    labels = [0, 0, 1, 1, 1, 1, 2, 2, 3, 4]
    ref = [0, 0, 1, 1, 0, 0, 2, 2, 3, 4]
    # class 0 loses 1 of 2 (-50); class 1 loses 2, gains 2 (0, 4 discordant); class 2
    # loses 1 of 2 (-50, 1 discordant); class 3 unchanged; class 4 loses 1 of 1 (-100)
    model = [0, 4, 4, 4, 1, 1, 2, 0, 3, 0]
    m = HarmMeter()
    m.update(_logits(model), _logits(ref), np.array(labels), [f"im{i}.png" for i in range(10)])
    h = m.result(lambda i: f"c{i}")
    assert [c.label for c in h.per_class] == [4, 0, 2, 1, 3]
    assert h.most_hurt == [4, 0, 2, 1]  # class 3 lost nothing
    c4 = h.per_class[0]
    assert (c4.n, c4.reference_top1, c4.top1, c4.lost, c4.change_points) == (1, 1, 0, 1, -100)
    assert c4.change_ci95 == pytest.approx((-100, -100 * (1 - Z2) / (1 + Z2)))
    assert h.beyond_interval == 0 and h.classes == 5
    # disagreements: INT8 wrong where FP32 was right first, then by path
    assert h.disagreements_total == 7
    hurt = [d.reference_class == d.true_class for d in h.disagreements]
    assert hurt == sorted(hurt, reverse=True)
    first = h.disagreements[0]
    assert (first.path, first.reference_name, first.model_name, first.true_name) == (
        "im1.png",
        "c0",
        "c4",
        "c0",
    )


def test_meter_caps_disagreements_but_counts_them_all():
    n = DISAGREEMENTS + 20
    m = HarmMeter()
    m.update(_logits([1] * n), _logits([0] * n), np.zeros(n, int), [f"{i:03d}" for i in range(n)])
    h = m.result(str)
    assert h.disagreements_total == n and len(h.disagreements) == DISAGREEMENTS
    assert h.per_class[0].n == n and h.beyond_interval == 1 and h.beyond_joint_interval == 1


@pytest.fixture
def swapped(tmp_path, photos):
    """FP32 always says 'cat' (3), the "INT8" always 'rocket' (7): on two cats and two
    rockets, the cats are all lost and the rockets all gained."""
    ref = constant_model(tmp_path / "ref.onnx", np.eye(10)[3], 32, TINY_PRE)
    q = constant_model(tmp_path / "q.onnx", np.eye(10)[7], 32, TINY_PRE)
    return ref, q, make_labelled(tmp_path / "labelled")


def test_per_class_harm_of_a_perturbed_model(swapped):
    ref, q, data = swapped
    e = api.evaluate(q, data, reference=ref)
    h = e.harm
    assert [c.name for c in h.per_class] == ["cat", "rocket"] and h.most_hurt == [3]
    cat, rocket = h.per_class
    assert (cat.n, cat.reference_top1, cat.top1, cat.lost, cat.gained) == (2, 1, 0, 2, 0)
    assert cat.change_points == -100 and cat.change_ci95[0] == -100
    assert cat.change_ci95 == pytest.approx((-100, -100 * (2 - Z2) / (2 + Z2)))
    assert (rocket.change_points, rocket.gained) == (100, 2)
    assert h.disagreements_total == 4 and h.groups == []
    assert [d.true_name for d in h.disagreements[:2]] == ["cat", "cat"]  # the harmed first
    # the float model against itself: nothing disagrees, nothing is hurt
    same = api.evaluate(ref, data, reference=ref).harm
    assert same.most_hurt == [] and same.disagreements_total == 0
    assert all(c.change_points == 0 for c in same.per_class)
    assert api.evaluate(q, data).harm is None  # no reference: nothing to compare with


def test_groups_by_relative_path_or_file_name(swapped, tmp_path):
    ref, q, data = swapped
    csv = tmp_path / "g.csv"
    csv.write_text("image,light,site\ncat/chelsea.png,day,a\nrocket.jpg,night,a\ncoffee.png,,b\n")
    h = api.evaluate(q, data, reference=ref, groups=csv).harm
    got = {(g.attribute, g.value): (g.n, g.lost, g.gained, g.change_points) for g in h.groups}
    assert got == {
        ("light", "day"): (1, 1, 0, -100),
        ("light", "night"): (1, 0, 1, 100),
        ("site", "a"): (2, 1, 1, 0),
        ("site", "b"): (1, 1, 0, -100),
    }
    # astronaut.png is not listed; coffee.png has no light
    assert h.groups_unlisted == {"light": 2, "site": 1}
    assert [g.attribute for g in h.groups] == ["light", "light", "site", "site"]


@pytest.mark.parametrize(
    "text, problem",
    [
        (None, "groups file not found"),
        ("", "is empty"),
        ("file,light\ncat/chelsea.png,day\n", "no 'image' column"),
        ("image\ncat/chelsea.png\n", "no attribute column"),
        ("image,light\ncat/nothere.png,day\nx.png,y\n", "'cat/nothere.png' (and 1 more) is not in"),
        ("image,light\nrocket.jpg,day\nrocket/rocket.jpg,night\n", "listed twice"),
        ("image,light\nrocket.jpg,day,extra\n", "line 2 has 3 fields"),
    ],
)
def test_bad_groups_csv_is_one_error_naming_the_file(tmp_path, photos, text, problem):
    data = open_dataset(make_labelled(tmp_path / "labelled"))
    csv = tmp_path / "g.csv"
    if text is not None:
        csv.write_text(text)
    with pytest.raises(QVisionError, match=re.escape(problem)) as info:
        read_groups(csv, data)
    assert info.value.path == str(csv)


def test_a_file_name_in_two_class_folders_must_be_a_path(tmp_path, photos):
    root = make_labelled(tmp_path / "labelled")
    (root / "rocket" / "chelsea.png").write_bytes((root / "cat" / "chelsea.png").read_bytes())
    csv = tmp_path / "g.csv"
    csv.write_text("image,light\nchelsea.png,day\n")
    with pytest.raises(QVisionError, match="names 2 images"):
        read_groups(csv, open_dataset(root))


def test_cli_eval_groups_json_and_table(swapped, tmp_path):
    ref, q, data = swapped
    csv = tmp_path / "g.csv"
    csv.write_text("image,light\ncat/chelsea.png,day\nrocket/rocket.jpg,night\n")
    r = run_cli(
        "eval",
        q,
        "--data",
        data,
        "--reference",
        ref,
        "--groups",
        csv,
        "--json",
        tmp_path / "e.json",
    )
    assert r.returncode == 0, r.stderr
    assert "most hurt classes" in r.stdout and "light = day" in r.stdout
    harm = json.loads((tmp_path / "e.json").read_text())["harm"]
    assert harm["most_hurt"] == [3] and harm["groups_unlisted"] == {"light": 2}
    assert {g["value"] for g in harm["groups"]} == {"day", "night"}


@pytest.mark.parametrize(
    "text, args, problem",
    [
        (None, (), "g.csv: groups file not found"),
        ("name,light\n", (), "g.csv: groups CSV has no 'image' column (columns: name, light)"),
        ("image,light\nmissing.png,day\n", (), "g.csv: image 'missing.png' is not in"),
        ("image,light\nrocket.jpg,day\n", ("--no-reference",), "--groups needs --reference"),
    ],
)
def test_cli_bad_groups_exit_2_one_line(swapped, tmp_path, text, args, problem):
    ref, q, data = swapped
    csv = tmp_path / "g.csv"
    if text is not None:
        csv.write_text(text)
    reference = () if "--no-reference" in args else ("--reference", ref)
    r = run_cli("eval", q, "--data", data, *reference, "--groups", csv)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and problem in lines[0] and "Traceback" not in r.stderr


def test_quantize_checks_groups_before_quantizing(tmp_path, photos):
    src = tiny_classifier(tmp_path / "t.onnx")
    data, calib = make_labelled(tmp_path / "labelled"), make_flat(tmp_path / "flat")
    csv = tmp_path / "g.csv"
    csv.write_text("image,light\nnothere.png,day\n")
    out = tmp_path / "q.onnx"
    r = run_cli("quantize", src, "-o", out, "--calib", calib, "--eval", data, "--groups", csv)
    assert r.returncode == 2 and "nothere.png' is not in" in r.stderr
    assert not out.exists()  # failed before any model ran


def test_report_section_from_the_records(swapped, tmp_path):
    ref, q, data = swapped
    csv = tmp_path / "g.csv"
    csv.write_text("image,light\ncat/chelsea.png,day\n")
    int8 = api.evaluate(q, data, reference=ref, groups=csv)
    section = harm_section(int8)
    assert section["rows"] == [["cat", "2", "100 % → 0 %", "-100.0", "-100.0 to +31.5", "2 / 0"]]
    assert (
        "1 of 2 classes lost" in section["summary"]
        and "no single class's change is resolved" in section["summary"]
    )
    assert len(section["thumbs"]) == 4 and section["thumbs"][0]["uri"].startswith(
        "data:image/jpeg;base64,"
    )
    assert section["thumbs"][0]["hurt"] and not section["thumbs"][-1]["hurt"]
    assert section["groups"][0][0] == "light = day" and "3 images" in section["groups_note"]
    fp32 = api.evaluate(ref, data)
    page = render(ReportInputs(fp32_eval=fp32, int8_eval=int8))
    assert "Per class: 1 of 2 classes lost" in model_card(
        ReportInputs(fp32_eval=fp32, int8_eval=int8)
    )
    assert "<h2>Per-class harm</h2>" in page and "Per group" in page
    assert render(ReportInputs(fp32_eval=fp32, int8_eval=fp32)).count("Per-class harm") == 0


def test_quantize_eval_groups_into_json_and_report(tmp_path, photos):
    src = tiny_classifier(tmp_path / "t.onnx")
    data, calib = make_labelled(tmp_path / "labelled"), make_flat(tmp_path / "flat")
    csv = tmp_path / "g.csv"
    csv.write_text("image,light\nchelsea.png,day\nrocket.jpg,night\n")
    r = run_cli(
        "quantize", src, "-o", tmp_path / "q.onnx", "--calib", calib, "--eval", data,
        "--groups", csv, "--report", tmp_path / "report", "--report-parts", "none",
        "--json", tmp_path / "qe.json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "qe.json").read_text())
    harm = result["int8"]["harm"]
    assert harm["classes"] == 2 and result["fp32"]["harm"] is None
    assert [g["value"] for g in harm["groups"]] == ["day", "night"]
    assert harm["groups_unlisted"] == {"light": 2}
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<h2>Per-class harm</h2>" in page and "light = day" in page
