"""Data checks before trusting a calibration or evaluation set: unreadable files, exact and
near duplicates, leakage between two sets, class balance, sizes and colour modes.

Near duplicates use a 64-bit difference hash (dHash: is each pixel of a 9x8 grayscale
thumbnail brighter than its right neighbour); resized, re-encoded or slightly edited copies
differ in a few bits, different photos in about half. Pairs within ``NEAR_BITS`` bits
count as near duplicates.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import BaseModel

from qvision.data.datasets import Dataset
from qvision.data.images import load_image
from qvision.errors import QVisionError
from qvision.fileio import sha256_file

NEAR_BITS = 4


class ImageFacts(BaseModel):
    path: str
    sha256: str
    dhash: int | None = None  # None when unreadable
    width: int = 0
    height: int = 0
    mode: str = ""
    error: str | None = None


class DataCheck(BaseModel):
    kind: str = "check-data"
    root: str
    files: int
    unreadable: list[tuple[str, str]]
    exact_duplicates: list[list[str]]  # groups of identical files
    near_duplicates: list[tuple[str, str, int]]  # (a, b, differing hash bits)
    classes: dict[str, int] = {}  # images per class, when labelled
    imbalance: float | None = None  # largest class / smallest class
    sizes: dict[str, list[int]] = {}  # width/height: min, median, max
    modes: dict[str, int] = {}
    against: str | None = None
    leaked_exact: list[tuple[str, str]] = []  # (this set, other set)
    leaked_near: list[tuple[str, str, int]] = []

    @property
    def problems(self) -> int:
        return (
            len(self.unreadable)
            + sum(len(g) - 1 for g in self.exact_duplicates)
            + len(self.near_duplicates)
            + len(self.leaked_exact)
            + len(self.leaked_near)
        )


def dhash(img: Image.Image) -> int:
    small = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.BILINEAR), np.int16)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def facts(dataset: Dataset) -> list[ImageFacts]:
    out = []
    for s in dataset.samples:
        rel = Path(s.path).relative_to(dataset.root).as_posix()
        f = ImageFacts(path=rel, sha256=sha256_file(s.path))
        try:
            img = load_image(s.path)  # guarded decode first; then the header is safe to read
            with Image.open(s.path) as raw:
                f.mode = raw.mode
            f.width, f.height, f.dhash = img.width, img.height, dhash(img)
        except QVisionError as exc:
            f.error = exc.problem
        out.append(f)
    return out


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Differing bits between every hash of ``a`` and every hash of ``b``: [len(a), len(b)]."""
    x = a[:, None] ^ b[None, :]
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(axis=-1)


def _near(a: list[ImageFacts], b: list[ImageFacts], same: bool) -> list[tuple[str, str, int]]:
    ha = [f for f in a if f.dhash is not None]
    hb = [f for f in b if f.dhash is not None]
    if not ha or not hb:
        return []
    va = np.array([f.dhash for f in ha], np.uint64)
    vb = np.array([f.dhash for f in hb], np.uint64)
    pairs = []
    for start in range(0, len(va), 512):  # blocks keep the distance matrix small
        d = _hamming(va[start : start + 512], vb)
        for i, j in zip(*np.nonzero(d <= NEAR_BITS), strict=True):
            fa, fb = ha[start + i], hb[j]
            if (same and start + i >= j) or fa.sha256 == fb.sha256:
                continue  # each pair once; identical files are exact duplicates
            pairs.append((fa.path, fb.path, int(d[i, j])))
    return pairs


def check_dataset(dataset: Dataset, against: Dataset | None = None) -> DataCheck:
    mine = facts(dataset)
    by_hash: dict[str, list[str]] = defaultdict(list)
    for f in mine:
        by_hash[f.sha256].append(f.path)
    readable = [f for f in mine if f.error is None]
    result = DataCheck(
        root=str(dataset.root),
        files=len(mine),
        unreadable=[(f.path, f.error) for f in mine if f.error is not None],
        exact_duplicates=[sorted(g) for g in by_hash.values() if len(g) > 1],
        near_duplicates=_near(mine, mine, same=True),
        modes=dict(Counter(f.mode for f in mine if f.mode)),
    )
    if readable:
        w = np.array([f.width for f in readable])
        h = np.array([f.height for f in readable])
        result.sizes = {
            "width": [int(w.min()), int(np.median(w)), int(w.max())],
            "height": [int(h.min()), int(np.median(h)), int(h.max())],
        }
    if dataset.labelled:
        names = dataset.classes
        counts = Counter(
            names[s.label] if s.label < len(names) else str(s.label) for s in dataset.samples
        )
        result.classes = dict(sorted(counts.items()))
        result.imbalance = max(counts.values()) / min(counts.values())
    if against is not None:
        theirs = facts(against)
        result.against = str(against.root)
        other = {f.sha256: f.path for f in theirs}
        result.leaked_exact = [(f.path, other[f.sha256]) for f in mine if f.sha256 in other]
        result.leaked_near = _near(mine, theirs, same=False)
    return result


def overlap(a: Dataset, b: Dataset) -> int:
    """How many files of ``a`` are byte-identical to a file of ``b`` (cheap leakage check)."""
    hashes = {sha256_file(s.path) for s in b.samples}
    return sum(sha256_file(s.path) in hashes for s in a.samples)
