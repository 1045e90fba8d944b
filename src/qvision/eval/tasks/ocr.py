"""OCR recognition: CTC greedy decoding and character error rate.

A CTC recognizer outputs per time step a distribution over [blank, alphabet...]; greedy
decoding takes the best class per step, merges repeats and drops blanks. CER is the
Levenshtein distance to the truth summed over lines, over the summed truth lengths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qvision.errors import QVisionError
from qvision.intervals import Z95

METADATA_KEY = "character"  # PaddleOCR's alphabet: one character per line


def read_alphabet(path: str | Path) -> str:
    """A recognizer's dictionary file (PaddleOCR's ``ppocr_keys_v1.txt``: one character per
    line, UTF-8) as the text the ``character`` metadata holds."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise QVisionError("alphabet file not found", p) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise QVisionError(f"cannot read the alphabet as UTF-8 text: {exc}", p) from None
    lines = text.splitlines()
    if not lines:
        raise QVisionError("alphabet file is empty (one character per line expected)", p)
    return "\n".join(lines)


def alphabet(metadata: dict[str, str], classes: int, source: str = "<model>") -> list[str]:
    """Class index -> text: index 0 is CTC blank; PaddleOCR appends a space class when
    the model has one more class than the dictionary."""
    if METADATA_KEY not in metadata:
        raise QVisionError(
            f"model has no '{METADATA_KEY}' metadata (its alphabet); an OCR recognizer needs it",
            source,
        )
    table = ["", *metadata[METADATA_KEY].splitlines()]
    if len(table) + 1 == classes:
        table.append(" ")
    if len(table) != classes:
        raise QVisionError(
            f"alphabet has {len(table)} entries with blank but the model outputs {classes} classes",
            source,
        )
    return table


def ctc_greedy(scores: np.ndarray, table: list[str]) -> list[str]:
    """[N, T, C] scores (probabilities or logits) -> N strings."""
    best = np.asarray(scores).argmax(axis=-1)
    out = []
    for row in best:
        keep = np.ones(row.shape, bool)
        keep[1:] = row[1:] != row[:-1]
        out.append("".join(table[i] for i in row[keep] if i != 0))
    return out


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


class TextMeter:
    """Character error rate and exact-match rate over lines."""

    def __init__(self) -> None:
        self.edits = self.chars = self.exact = self.n = 0

    def update(self, predicted: list[str], truth: list[str]) -> None:
        for p, t in zip(predicted, truth, strict=True):
            self.edits += edit_distance(p, t)
            self.chars += len(t)
            self.exact += p == t
            self.n += 1

    def result(self) -> dict[str, float]:
        return {
            "cer": self.edits / max(self.chars, 1),
            "exact_match": self.exact / max(self.n, 1),
        }


class PairedCer:
    """CER points a model loses against a reference on the same labelled lines, with a 95 %
    interval: a ratio of summed edit differences to summed characters, its spread from the
    per-line residuals (the delta method), so lines both read alike add little."""

    def __init__(self) -> None:
        self.diffs: list[int] = []  # per line: model's edits - reference's edits
        self.chars: list[int] = []

    def update(self, predicted: list[str], reference: list[str], truth: list[str]) -> None:
        for p, r, t in zip(predicted, reference, truth, strict=True):
            self.diffs.append(edit_distance(p, t) - edit_distance(r, t))
            self.chars.append(len(t))

    def interval(self, z: float = Z95) -> tuple[float, float]:
        """The CER change's interval in points at ``z``."""
        r = self.result(z)
        if not r:
            return -100.0, 100.0
        return r["drop_points"] - r["drop_ci95_points"], r["drop_points"] + r["drop_ci95_points"]

    def result(self, z: float = Z95) -> dict[str, float]:
        n, total = len(self.diffs), sum(self.chars)
        if n < 2 or total == 0:
            return {}
        drop = sum(self.diffs) / total
        # two pseudo-lines, one edit worse and one edit better, as the +1/2 cells of a
        # paired proportion: lines that all read alike leave an interval of about one
        # edit's worth, not zero
        mean = total / n
        d = np.asarray([*self.diffs, 1, -1], float)
        c = np.asarray([*self.chars, mean, mean], float)
        resid = d - drop * c
        m = n + 2
        se = np.sqrt(m / (m - 1) * (resid**2).sum()) / c.sum()
        return {"drop_points": 100 * drop, "drop_ci95_points": 100 * z * se}
