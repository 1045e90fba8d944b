"""Confidence intervals, written once, for every figure qvision prints with an interval.

- a share of n (top-1, agreement, exact match): Wilson's score interval, which never
  collapses to zero width at 0 % or 100 % (the normal approximation does);
- a difference of paired outcomes (FP32 and INT8 right or wrong on the same images):
  Agresti and Min's (2005) interval, a Wald interval after adding 1/2 to each cell of the
  2x2 table, so that no flip on n images still leaves an interval of about ±2/n;
- the same difference on few items (a class of 1 to 10 images): Tango's (1998) score
  interval, which keeps close to 95 % coverage down to n = 1 where Wald-type ones fall
  to 70-85 %;
- several settings judged at once (robustness over 27 corruptions): Bonferroni's z.
"""

from __future__ import annotations

import math
from statistics import NormalDist

Z95 = NormalDist().inv_cdf(0.975)


def z_for(confidence: float = 0.95, tests: int = 1) -> float:
    """Two-sided z for ``confidence`` held jointly over ``tests`` intervals (Bonferroni)."""
    alpha = (1 - confidence) / max(tests, 1)
    return NormalDist().inv_cdf(1 - alpha / 2)


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Interval for the share k/n."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def paired_difference(lost: int, gained: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Interval for (lost - gained) / n: the share a model loses against a reference on the
    same n items, ``lost`` being right for the reference only, ``gained`` for the model only."""
    b, c, m = lost + 0.5, gained + 0.5, n + 2
    d = (b - c) / m
    half = z * math.sqrt(max((b + c) - (b - c) ** 2 / m, 0.0)) / m
    return d - half, d + half


def _tango_z(lost: int, gained: int, n: int, d: float) -> float:
    """Tango's score statistic for the paired difference ``d``: the observed difference
    against its variance under the restricted maximum-likelihood cell shares."""
    m = n - lost - gained
    b = lost * (1 - d) + gained * (1 - 3 * d) - 2 * m * d
    # the gained cell's share under d, the positive root of 2n x^2 - b x - gained d (1-d)
    x = (b + math.sqrt(max(b * b + 8 * n * gained * d * (1 - d), 0.0))) / (4 * n)
    var = n * (2 * x + d * (1 - d))
    num = lost - gained - n * d
    if var <= 1e-300:  # a degenerate edge (d = ±1, or nothing discordant at d = 0)
        return 0.0 if abs(num) < 1e-9 else math.copysign(math.inf, num)
    return num / math.sqrt(var)


def paired_difference_score(lost: int, gained: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Tango's score interval for (lost - gained) / n, as ``paired_difference`` but honest
    for small n: every d whose score statistic is within ``z``, found by bisection.
    Nothing discordant gives ± z²/(n + z²); one image lost of one, (1 - z²)/(1 + z²) to 1."""
    if n <= 0:
        return -1.0, 1.0
    d = (lost - gained) / n

    def edge(outer: float) -> float:
        if abs(_tango_z(lost, gained, n, outer)) <= z:
            return outer
        inside = d  # the statistic is 0 at d and grows in size towards either end
        for _ in range(60):
            mid = (inside + outer) / 2
            if abs(_tango_z(lost, gained, n, mid)) <= z:
                inside = mid
            else:
                outer = mid
        return inside

    return edge(-1.0), edge(1.0)


def half_width(interval: tuple[float, float], estimate: float) -> float:
    """The larger distance from ``estimate`` to an end: what '± x' around it must say."""
    return max(estimate - interval[0], interval[1] - estimate)
