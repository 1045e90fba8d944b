"""Dataset manifests: what exactly was used, file by file, so results can be reproduced."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel

from qvision.data.datasets import Dataset
from qvision.fileio import sha256_file


class ManifestEntry(BaseModel):
    path: str  # relative to the dataset root, '/'-separated
    sha256: str
    size_bytes: int
    label: int | None = None


class DatasetManifest(BaseModel):
    root: str
    n: int
    sha256: str  # over the sorted (path, sha256, label) lines: one id for the whole set
    classes: list[str] = []
    files: list[ManifestEntry]


def build_manifest(dataset: Dataset) -> DatasetManifest:
    entries = []
    for s in dataset.samples:
        rel = Path(s.path).relative_to(dataset.root).as_posix()
        entries.append(
            ManifestEntry(
                path=rel,
                sha256=sha256_file(s.path),
                size_bytes=s.path.stat().st_size,
                label=s.label,
            )
        )
    entries.sort(key=lambda e: e.path)
    digest = hashlib.sha256()
    for e in entries:
        digest.update(f"{e.path}\t{e.sha256}\t{'' if e.label is None else e.label}\n".encode())
    return DatasetManifest(
        root=str(dataset.root),
        n=len(entries),
        sha256=digest.hexdigest(),
        classes=dataset.classes,
        files=entries,
    )
