"""Intervals never claim certainty the data cannot give, and cover what they say."""

import numpy as np
import pytest

from qvision import api
from qvision.eval.tasks.classification import PairedTopOne
from qvision.eval.tasks.ocr import PairedCer
from qvision.intervals import paired_difference, wilson, z_for


def test_wilson_at_the_edges_and_in_the_middle():
    lo, hi = wilson(0, 30)
    assert lo == 0 and hi == pytest.approx(1.959964**2 / (30 + 1.959964**2))
    lo, hi = wilson(30, 30)
    assert hi == 1 and 0.88 < lo < 0.9
    lo, hi = wilson(450, 900)
    assert lo == pytest.approx(0.5 - hi + 0.5) and hi - lo == pytest.approx(0.0653, abs=1e-3)


def test_paired_difference_is_never_zero_width_and_covers():
    lo, hi = paired_difference(0, 0, 30)
    assert lo < 0 < hi and hi == pytest.approx(1.959964 / 32)
    # coverage: 2000 draws of 300 paired outcomes, 3 % lost and 1 % gained
    rng = np.random.default_rng(0)
    n, truth, hits = 300, 0.02, 0
    for _ in range(2000):
        lost, gained, _ = rng.multinomial(n, [0.03, 0.01, 0.96])
        lo, hi = paired_difference(int(lost), int(gained), n)
        hits += lo <= truth <= hi
    assert 0.93 <= hits / 2000 <= 0.975


def test_bonferroni_z_for_27_settings():
    assert z_for(0.95) == pytest.approx(1.959964, abs=1e-5)
    assert z_for(0.95, 27) == pytest.approx(3.1130, abs=1e-3)  # two-sided, alpha 0.05/27


def test_no_flip_on_30_images_is_not_certainty(tiny_model, labelled_dir):
    meter = PairedTopOne()
    logits = np.eye(10)[np.arange(30) % 10]
    meter.update(logits, logits, np.arange(30) % 10)
    res = meter.result()
    assert res["drop_points"] == 0 and res["drop_ci95_points"] > 5  # about ±2/n
    # through evaluate: a model against itself on labelled images
    e = api.evaluate(tiny_model, labelled_dir, reference=tiny_model)
    assert e.fidelity.drop_points == 0 and e.fidelity.drop_ci95_points > 0
    lo, hi = e.fidelity.top1_agreement_ci95
    assert e.agreement == 1 and lo < 1 and hi == 1
    lo, hi = e.metrics_ci95["top1"]
    assert lo <= e.metrics["top1"] <= hi and hi - lo > 0


def test_cer_change_of_identical_readings_has_an_interval():
    meter = PairedCer()
    lines = ["the quick brown fox", "jumps over", "the lazy dog"] * 10
    meter.update(lines, lines, lines)
    res = meter.result()
    assert res["drop_points"] == 0 and res["drop_ci95_points"] > 0
