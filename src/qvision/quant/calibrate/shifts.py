"""Calibration images with photometric shifts: each photo once as it is and ``copies``
times under a mild shift (darker, brighter, lower contrast, sensor noise, slight defocus),
so that activation ranges also cover the conditions a deployed model meets, not only the
calibration set's. Deterministic: the shift of a copy depends on its position only."""

from __future__ import annotations

import copy

import numpy as np

from qvision.data import Dataset
from qvision.eval.robustness import corrupt

SHIFTS = (
    ("dark", 1),
    ("dark", 2),
    ("bright", 1),
    ("contrast", 1),
    ("contrast", 2),
    ("gaussian-noise", 1),
    ("defocus-blur", 1),
)


def with_shifts(dataset: Dataset, copies: int, seed: int = 0):
    """(the dataset with each sample repeated ``copies`` more times, the ``transform`` for
    iter_batches that leaves the originals alone and shifts the repeats)."""
    n = len(dataset)
    out = copy.copy(dataset)
    out.samples = list(dataset.samples) * (1 + copies)
    makers = {s: corrupt(*s) for s in SHIFTS}

    def transform(img, index: int):
        if index < n:
            return img
        pick = SHIFTS[int(np.random.default_rng([seed, index]).integers(len(SHIFTS)))]
        return makers[pick](img, index)

    return out, transform
