import numpy as np
import pytest

from qvision.qmath import QFormat, fake_quantize, qparams
from qvision.quant.calibrate import HistogramObserver, MinMaxObserver, make_observer
from qvision.quant.calibrate.observers import NonFiniteError

U8 = QFormat("uint8", 8, symmetric=False)


def _stream(obs, x, parts=7):
    for chunk in np.array_split(x, parts):
        obs.update(chunk)
    return obs


def test_minmax_streams_exactly():
    x = np.random.default_rng(0).standard_normal(10_000).astype(np.float32)
    assert _stream(MinMaxObserver(), x).range() == (float(x.min()), float(x.max()))


def test_histogram_doubling_keeps_counts():
    obs = HistogramObserver(bins=64)
    obs.update(np.array([0.1, -0.1], np.float32))
    obs.update(np.array([5.0, -7.0], np.float32))  # forces several doublings
    assert obs.hist.sum() == 4 and obs.radius >= 7.0


def test_nan_and_inf_are_reported():
    for bad in (np.nan, np.inf):
        with pytest.raises(NonFiniteError):
            make_observer("mse").update(np.array([1.0, bad], np.float32))


@pytest.mark.parametrize("method", ["percentile", "entropy", "mse"])
def test_histogram_methods_clip_outliers_and_beat_minmax(method):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(1_000_000), [12.0, -11.0]]).astype(np.float32)
    hist = _stream(make_observer(method), x)
    lo, hi = hist.range(U8)
    assert -11.0 < lo < 0 < hi < 12.0
    mm = MinMaxObserver()
    mm.update(x)

    def mse(r):
        s, z = qparams(r[0], r[1], U8)
        return float(((fake_quantize(x, s, z, U8) - x) ** 2).mean())

    assert mse((lo, hi)) < mse(mm.range())


def test_memory_is_fixed():
    obs = HistogramObserver()
    size = obs.hist.nbytes
    for _ in range(20):
        obs.update(np.random.default_rng(2).standard_normal(50_000).astype(np.float32) * 10)
    assert obs.hist.nbytes == size


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown calibration method"):
        make_observer("magic")


def test_mean_minmax_averages_per_batch_extremes_and_any_method_reads_histograms():
    from qvision.quant.calibrate.observers import HistogramObserver, MinMaxObserver

    o = MinMaxObserver("mean-minmax")
    for lo, hi in [(-1.0, 2.0), (-3.0, 4.0), (0.0, 100.0)]:
        o.update(np.array([lo, hi], np.float32))
    assert o.range() == pytest.approx((-4 / 3, 106 / 3))
    assert o.for_method("minmax").range() == (-3.0, 100.0)
    assert o.serves("mean-minmax") and not o.serves("entropy")
    h = HistogramObserver(method="mse")
    rng = np.random.default_rng(0)
    for _ in range(4):
        h.update(rng.standard_normal(1000).astype(np.float32))
    assert h.serves("entropy") and h.for_method("minmax").range() == (h.lo, h.hi)
    assert h.for_method("mean-minmax").range()[1] < h.hi
    assert h.method == "mse"  # the copy did not change the original
