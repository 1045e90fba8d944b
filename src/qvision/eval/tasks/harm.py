"""Where a model's top-1 harm against its float reference falls: per true class, per group
of a --groups CSV, and the images the two classify differently. An average drop of a
point can hide classes that lose far more (Hooker et al. 2019, "compression-identified
exemplars"); this names them, with intervals honest at a handful of images per class."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from qvision.data.groups import Groups
from qvision.eval.tasks.classification import as_logits
from qvision.intervals import Z95, paired_difference_score, z_for
from qvision.records import ClassHarm, Disagreement, GroupHarm, Harm

MOST_HURT = 10
DISAGREEMENTS = 50  # kept in the result; the total is always counted


class _Cell:
    """Paired top-1 counts over some images: n, right for FP32, right for INT8, lost, gained."""

    __slots__ = ("n", "ref_ok", "ok", "lost", "gained")

    def __init__(self) -> None:
        self.n = self.ref_ok = self.ok = self.lost = self.gained = 0

    def add(self, ref_ok: bool, ok: bool) -> None:
        self.n += 1
        self.ref_ok += ref_ok
        self.ok += ok
        self.lost += ref_ok and not ok
        self.gained += ok and not ref_ok

    def figures(self, z: float = Z95) -> dict:
        lo, hi = paired_difference_score(self.lost, self.gained, self.n, z)
        return {
            "n": self.n,
            "reference_top1": self.ref_ok / self.n,
            "top1": self.ok / self.n,
            "lost": self.lost,
            "gained": self.gained,
            "change_points": 100 * (self.gained - self.lost) / self.n + 0.0,
            # the interval is for the drop; + 0.0 writes no -0.0
            "change_ci95": (-100 * hi + 0.0, -100 * lo + 0.0),
        }


def _excludes_zero(cell: _Cell, z: float) -> bool:
    lo, hi = paired_difference_score(cell.lost, cell.gained, cell.n, z)
    return lo > 0 or hi < 0


class HarmMeter:
    """Accumulates batch by batch: counters per class and per group, and the (usually few)
    disagreeing images, so memory grows with disagreements, not with the data set."""

    def __init__(self, groups: Groups | None = None) -> None:
        self.classes: dict[int, _Cell] = {}
        self.groups = groups
        self.group_cells: dict[tuple[str, str], _Cell] = {}
        self.unlisted = dict.fromkeys(groups.attributes, 0) if groups else {}
        self.disagree: list[
            tuple[bool, str, int, int, int]
        ] = []  # (not harm, path, ref, model, true)

    def update(self, logits: np.ndarray, ref: np.ndarray, labels: np.ndarray, paths) -> None:
        # argmax takes the lowest index on ties, as PairedTopOne does
        pred, ref_pred = as_logits(logits).argmax(axis=1), as_logits(ref).argmax(axis=1)
        for p, r, y, path in zip(pred, ref_pred, labels, paths, strict=True):
            p, r, y, ok, ref_ok = int(p), int(r), int(y), bool(p == y), bool(r == y)
            self.classes.setdefault(y, _Cell()).add(ref_ok, ok)
            if p != r:
                self.disagree.append((not (ref_ok and not ok), str(path), r, p, y))
            if self.groups is not None:
                values = self.groups.values.get(str(path), {})
                for a in self.groups.attributes:
                    if a in values:
                        self.group_cells.setdefault((a, values[a]), _Cell()).add(ref_ok, ok)
                    else:
                        self.unlisted[a] += 1

    def _group_order(self, item: tuple[tuple[str, str], _Cell]) -> tuple[int, str]:
        (attribute, value), _ = item
        return self.groups.attributes.index(attribute), value

    def result(self, name_of: Callable[[int], str]) -> Harm:
        # stable sorts, last key first: class index, then more discordant images first
        ranked = sorted(self.classes.items(), key=lambda kv: kv[0])
        ranked.sort(key=lambda kv: -(kv[1].lost + kv[1].gained))
        ranked.sort(key=lambda kv: (kv[1].gained - kv[1].lost) / kv[1].n)
        joint = z_for(0.95, len(self.classes))
        per_class = [ClassHarm(label=y, name=name_of(y), **cell.figures()) for y, cell in ranked]
        self.disagree.sort()
        return Harm(
            classes=len(self.classes),
            per_class=per_class,
            most_hurt=[c.label for c in per_class if c.lost][:MOST_HURT],
            beyond_interval=sum(_excludes_zero(c, Z95) for c in self.classes.values()),
            beyond_joint_interval=sum(_excludes_zero(c, joint) for c in self.classes.values()),
            disagreements=[
                Disagreement(
                    path=path,
                    reference_class=r,
                    model_class=p,
                    true_class=y,
                    reference_name=name_of(r),
                    model_name=name_of(p),
                    true_name=name_of(y),
                )
                for _, path, r, p, y in self.disagree[:DISAGREEMENTS]
            ],
            disagreements_total=len(self.disagree),
            groups=[
                GroupHarm(attribute=a, value=v, **cell.figures())
                for (a, v), cell in sorted(self.group_cells.items(), key=self._group_order)
            ],
            groups_file=None if self.groups is None else str(self.groups.path),
            groups_unlisted=self.unlisted,
        )
