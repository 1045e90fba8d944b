"""AdaRound's soft rounding (Nagel et al. 2020), shared by layer-wise (``adaround``) and
block (``brecq``) fitting.

A weight is ``S · (floor(W/S) + h(V))`` with ``h`` a rectified sigmoid that reaches exactly
0 and 1; the regularizer ``1 − |2h − 1|^β``, with β annealed from 20 to 2 after a warm-up,
pushes every ``h`` to one of them so the learned soft weight is also the deployed one.
"""

from __future__ import annotations

ZETA, GAMMA = 1.1, -0.1
WARMUP = 0.2  # share of the iterations fitted without the regularizer
BETA = (20.0, 2.0)


def start_logits(torch, rest):
    """V with ``h(V) == rest`` (the fractional part of W/S): fitting starts at the float weight."""
    return torch.log((rest - GAMMA) / (ZETA - rest) + 1e-12).clamp(-8, 8)


def rectified(torch, v):
    """h(V): the soft rounding, in [0, 1]."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)


def beta(i: int, iters: int) -> float | None:
    """The regularizer's exponent at iteration ``i``; None during the warm-up."""
    warm = int(WARMUP * iters)
    if i < warm:
        return None
    return BETA[0] + (BETA[1] - BETA[0]) * (i - warm) / max(1, iters - warm)


def regularizer(h, b: float):
    """Summed over weights: 0 where every rounding is decided (h is 0 or 1)."""
    return (1 - (2 * h - 1).abs().pow(b)).sum()


def undecided(h) -> int:
    """Roundings still strictly between down and up: rounding them at 0.5 is a guess the
    fit did not make. Both algorithms log the share of these when fitting stops."""
    return int(((h > 0) & (h < 1)).sum())
