"""Shift-safe ranges: when the user names no calibration method, the target's default
ranges and plain min/max ranges are both planned from the one calibration pass, and each
INT8 model is scored against FP32 on clean and shifted copies of calibration images (the
quick shift check). The candidate with the higher mean output SQNR over those settings
wins; the default keeps ties. Each setting's SQNR counts between 0 dB (the output is
noise: how much worse does not matter) and 60 dB, so one ruined or one perfect setting
cannot outvote the rest.

Why: averaged per-image ranges (``mean-minmax``) fit clean images best but can clip what
darker, brighter or flatter inputs reach (the PP-OCRv4 text detector read no dark page);
plain min/max keeps those values and costs clean accuracy on classifiers. Scoring both on
shifted copies picks per model, label-free.
"""

from __future__ import annotations

import math

from qvision.records import MethodChoice, ShiftCheck

ALTERNATIVE = "minmax"  # planned beside the target's default
TIE_DB = 1.0  # the alternative must beat the default's mean SQNR by more than this
FLOOR_DB, CAP_DB = 0.0, 60.0
# recovery that fits weights to one set of ranges and costs minutes: not run twice
COSTLY = frozenset({"adaround", "brecq", "act-search"})


def mean_sqnr(check: ShiftCheck) -> float:
    """Output SQNR over the clean and shifted settings, each held to [FLOOR_DB, CAP_DB]
    (identical outputs count as CAP_DB)."""
    values = [check.clean_sqnr_db, *(r.sqnr_db for r in check.rows)]
    return sum(CAP_DB if v is None else min(max(v, FLOOR_DB), CAP_DB) for v in values) / len(values)


def choose(checks: dict[str, ShiftCheck], default: str) -> MethodChoice:
    """The default method unless another's mean SQNR is clearly higher."""
    score = {m: mean_sqnr(c) for m, c in checks.items()}
    best = max(score, key=lambda m: score[m])
    chosen = best if best != default and score[best] > score[default] + TIE_DB else default
    worst = {m: _worst_setting(c) for m, c in checks.items()}
    reason = (
        f"mean output SQNR on {checks[default].images} calibration images, clean and under "
        f"{len(checks[default].rows)} shifts: "
        + ", ".join(f"{m} {score[m]:.1f} dB (worst {worst[m]})" for m in checks)
    )
    return MethodChoice(chosen=chosen, default=default, reason=reason, mean_sqnr_db=score)


def _worst_setting(check: ShiftCheck) -> str:
    settings = [("clean", check.clean_sqnr_db)] + [
        (f"{r.shift} {r.severity}", r.sqnr_db) for r in check.rows
    ]
    return min(settings, key=lambda s: math.inf if s[1] is None else s[1])[0]
