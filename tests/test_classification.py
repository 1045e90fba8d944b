import numpy as np
import pytest

from qvision.eval.tasks import FidelityMeter, PairedTopOne, TopKMeter


def test_topk_counts():
    logits = np.array(
        [[0.1, 0.9, 0.0, 0, 0, 0], [0.8, 0.1, 0.05, 0.02, 0.01, 0.0], [0, 0, 0, 0, 0, 1.0]]
    )
    m = TopKMeter()
    m.update(logits, np.array([1, 2, 0]))
    # sample 0: top1 hit; sample 1: label 2 is 3rd -> top5 hit; sample 2: label 0 ties with others at 0
    r = m.result()
    assert r["top1"] == pytest.approx(1 / 3)
    assert r["top5"] == pytest.approx(3 / 3)


def test_topk_accumulates_over_batches_and_handles_4d_outputs():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((50, 20))
    labels = rng.integers(0, 20, 50)
    whole, parts = TopKMeter(), TopKMeter()
    whole.update(logits, labels)
    for i in range(0, 50, 7):
        parts.update(logits[i : i + 7, :, None, None], labels[i : i + 7])
    assert whole.result() == parts.result()
    assert whole.result()["top1"] == pytest.approx(np.mean(logits.argmax(1) == labels))


def test_fidelity_identical_and_perturbed():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((40, 10)) * 3
    same = FidelityMeter()
    same.update(ref, ref)
    r = same.result()
    assert r["top1_agreement"] == 1.0 and r["cosine"] == pytest.approx(1.0) and r["sqnr_db"] is None
    assert r["kl_div"] == pytest.approx(0.0, abs=1e-12)

    noise = rng.standard_normal(ref.shape) * 0.3
    m = FidelityMeter()
    m.update(ref + noise, ref)
    r = m.result()
    expected_sqnr = 10 * np.log10((ref**2).sum() / (noise**2).sum())
    assert r["sqnr_db"] == pytest.approx(expected_sqnr)
    assert 0 < r["kl_div"] < 0.1 and 0.9 < r["cosine"] < 1.0
    assert r["top1_agreement"] == pytest.approx(np.mean((ref + noise).argmax(1) == ref.argmax(1)))


def test_fidelity_does_not_softmax_probabilities_twice():
    p = np.array([[0.7, 0.2, 0.1]])
    q = np.array([[0.6, 0.3, 0.1]])
    m = FidelityMeter()
    m.update(q, p)
    expected = float((p * np.log(p / q)).sum())
    assert m.result()["kl_div"] == pytest.approx(expected)


def test_fidelity_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        FidelityMeter().update(np.zeros((2, 3)), np.zeros((2, 4)))


def test_paired_top_one_counts_only_the_images_one_model_gets_right():
    labels = np.array([0, 1, 2, 3, 4, 5])
    eye = np.eye(6)
    ref = eye[[0, 1, 2, 3, 0, 0]]  # right on images 0-3
    model = eye[[0, 1, 0, 0, 4, 0]]  # right on 0, 1, 4: loses 2 and 3, gains 4
    m = PairedTopOne()
    m.update(model[:4], ref[:4], labels[:4])
    m.update(model[4:], ref[4:], labels[4:])
    d = (ref.argmax(1) == labels).astype(float) - (model.argmax(1) == labels)
    r = m.result()
    assert (m.lost, m.gained, m.n) == (2, 1, 6)
    assert r["drop_points"] == pytest.approx(100 * d.mean())
    # Agresti-Min: 1/2 added to each cell of the 2x2 table (lost 2.5, gained 1.5, n 8)
    b, c, m8 = 2.5, 1.5, 8
    half = 1.959964 * np.sqrt((b + c) - (b - c) ** 2 / m8) / m8
    assert r["drop_ci95_low"] == pytest.approx(100 * ((b - c) / m8 - half), abs=1e-3)
    assert r["drop_ci95_high"] == pytest.approx(100 * ((b - c) / m8 + half), abs=1e-3)
    assert r["drop_ci95_points"] == pytest.approx(
        max(r["drop_points"] - r["drop_ci95_low"], r["drop_ci95_high"] - r["drop_points"])
    )

    same = PairedTopOne()
    same.update(ref, ref, labels)
    res = same.result()  # no flip on 6 images: not certainty
    assert res["drop_points"] == 0.0 and res["drop_ci95_points"] > 20
    assert PairedTopOne().result() == {}
