"""Classification: top-k accuracy against labels; fidelity of one model's scores to another's.

Both meters accumulate batch by batch, so nothing grows with the dataset but counters.
"""

from __future__ import annotations

import numpy as np

from qvision.intervals import Z95, half_width, paired_difference, wilson
from qvision.qmath import sqnr_db


def as_logits(output: np.ndarray) -> np.ndarray:
    """[N, C] from [N, C] or [N, C, 1, 1]; float64 for stable sums."""
    out = np.asarray(output)
    if out.ndim > 2:
        out = out.reshape(out.shape[0], -1)
    return out.astype(np.float64, copy=False)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def _looks_like_probs(x: np.ndarray) -> bool:
    return bool(x.min() >= 0 and np.allclose(x.sum(axis=1), 1.0, atol=1e-3))


def _log_probs(x: np.ndarray) -> np.ndarray:
    # Models ending in Softmax already give probabilities; softmaxing them again would flatten them.
    if _looks_like_probs(x):
        return np.log(np.clip(x, 1e-12, None))
    return _log_softmax(x)


class TopKMeter:
    """Top-1 / top-5 accuracy."""

    def __init__(self, ks: tuple[int, ...] = (1, 5)):
        self.ks = ks
        self.correct = dict.fromkeys(ks, 0)
        self.n = 0

    def update(self, logits: np.ndarray, labels: np.ndarray) -> None:
        logits = as_logits(logits)
        labels = np.asarray(labels)
        kmax = min(max(self.ks), logits.shape[1])
        # argsort of the negated scores; stable so ties go to the lower index, like argmax
        top = np.argsort(-logits, axis=1, kind="stable")[:, :kmax]
        hits = top == labels[:, None]
        for k in self.ks:
            self.correct[k] += int(hits[:, : min(k, kmax)].any(axis=1).sum())
        self.n += len(labels)

    def result(self) -> dict[str, float]:
        return {f"top{k}": (self.correct[k] / self.n if self.n else 0.0) for k in self.ks}

    def intervals(self) -> dict[str, tuple[float, float]]:
        """95 % (Wilson) interval of each top-k share."""
        return {f"top{k}": wilson(self.correct[k], self.n) for k in self.ks} if self.n else {}


class PairedTopOne:
    """Top-1 points a model loses against a reference model on the same labelled images,
    with a 95 % interval. Only images that exactly one of the two gets right move the
    difference, so its uncertainty comes from those (a paired test, as McNemar's), not from
    two independent accuracies: 900 images resolve a W4A8 drop of ~2 points to about ±1.4.
    The interval is Agresti and Min's (intervals.paired_difference): with no image flipped
    it still spans about ±2/n, not zero."""

    def __init__(self) -> None:
        self.n = self.gained = self.lost = 0

    def update(self, logits: np.ndarray, ref: np.ndarray, labels: np.ndarray) -> None:
        # argmax takes the lowest index on ties, as TopKMeter's stable sort does
        ok = as_logits(logits).argmax(axis=1) == labels
        ref_ok = as_logits(ref).argmax(axis=1) == labels
        self.gained += int((ok & ~ref_ok).sum())
        self.lost += int((ref_ok & ~ok).sum())
        self.n += len(labels)

    def interval(self, z: float = Z95) -> tuple[float, float]:
        """The drop's interval in points at ``z`` (a wider z for several settings at once)."""
        lo, hi = paired_difference(self.lost, self.gained, self.n, z)
        return 100 * lo, 100 * hi

    def result(self) -> dict[str, float]:
        if not self.n:
            return {}
        drop = (self.lost - self.gained) / self.n
        lo, hi = paired_difference(self.lost, self.gained, self.n)
        return {
            "drop_points": 100 * drop,
            "drop_ci95_points": 100 * half_width((lo, hi), drop),
            "drop_ci95_low": 100 * lo,
            "drop_ci95_high": 100 * hi,
        }


class FidelityMeter:
    """How closely a model's scores follow a reference model's on the same inputs.

    - top1_agreement: share of inputs where both pick the same class;
    - cosine: mean per-input cosine similarity of the score vectors;
    - sqnr_db: 10 log10(signal energy / error energy) over all scores (None if identical);
    - kl_div: mean KL(reference || model) of the softmax distributions, in nats.
    """

    def __init__(self) -> None:
        self.n = 0
        self.agree = 0
        self.cos_sum = 0.0
        self.signal = 0.0
        self.noise = 0.0
        self.kl_sum = 0.0

    def update(self, model_out: np.ndarray, ref_out: np.ndarray) -> None:
        q, r = as_logits(model_out), as_logits(ref_out)
        if q.shape != r.shape:
            raise ValueError(f"output shapes differ: {q.shape} vs reference {r.shape}")
        self.agree += int((q.argmax(axis=1) == r.argmax(axis=1)).sum())
        norms = np.linalg.norm(q, axis=1) * np.linalg.norm(r, axis=1)
        cos = np.where(norms > 0, (q * r).sum(axis=1) / np.where(norms > 0, norms, 1.0), 1.0)
        self.cos_sum += float(cos.sum())
        self.signal += float((r * r).sum())
        self.noise += float(((q - r) ** 2).sum())
        lr, lq = _log_probs(r), _log_probs(q)
        self.kl_sum += float((np.exp(lr) * (lr - lq)).sum())
        self.n += q.shape[0]

    def result(self) -> dict[str, float | None]:
        if not self.n:
            return {"top1_agreement": 0.0, "cosine": 0.0, "sqnr_db": None, "kl_div": 0.0}
        return {
            "top1_agreement": self.agree / self.n,
            "cosine": self.cos_sum / self.n,
            "sqnr_db": sqnr_db(self.signal, self.noise),
            "kl_div": max(0.0, self.kl_sum / self.n),
        }
