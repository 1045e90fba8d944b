"""Image groups from a CSV (``--groups``): ``image,<attribute>...`` per row, each image
named by its path relative to the data folder or by its file name. Read and checked
against the data set before any model runs, so a bad file is one line, not a lost run."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from qvision.data.datasets import Dataset
from qvision.errors import QVisionError


@dataclass
class Groups:
    path: Path
    attributes: list[str]
    # sample path (as str) -> attribute -> value; blank cells are left out
    values: dict[str, dict[str, str]] = field(default_factory=dict)


def _key(name: str) -> str:
    return name.strip().replace("\\", "/").removeprefix("./")


def _index(dataset: Dataset) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Each sample by its relative path, and by its file name (which may repeat)."""
    by_rel: dict[str, str] = {}
    by_name: dict[str, list[str]] = {}
    for s in dataset.samples:
        try:
            rel = s.path.relative_to(dataset.root).as_posix()
        except ValueError:
            rel = s.path.name
        by_rel[rel] = str(s.path)
        by_name.setdefault(s.path.name, []).append(str(s.path))
    return by_rel, by_name


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.is_file():
        raise QVisionError("groups file not found", path)
    try:
        # utf-8-sig: spreadsheets often start a CSV with a byte-order mark
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise QVisionError(f"cannot read the groups CSV ({exc})", path) from None
    if not rows:
        raise QVisionError("groups CSV is empty (want a header: image,<attribute>...)", path)
    return [c.strip() for c in rows[0]], rows[1:]


def read_groups(path: str | Path, dataset: Dataset) -> Groups:
    """The groups of ``dataset``'s images named in the CSV at ``path``; every problem
    (no file, no ``image`` column, an image not in the data) raises, naming the file."""
    path = Path(path)
    header, rows = _rows(path)
    if "image" not in header:
        raise QVisionError(f"groups CSV has no 'image' column (columns: {', '.join(header)})", path)
    if len(set(header)) != len(header) or "" in header:
        raise QVisionError("groups CSV has a blank or repeated column name", path)
    attributes = [h for h in header if h != "image"]
    if not attributes:
        raise QVisionError("groups CSV has no attribute column beside 'image'", path)
    col = header.index("image")
    by_rel, by_name = _index(dataset)
    groups = Groups(path, attributes)
    missing: list[str] = []
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise QVisionError(f"line {line} has {len(row)} fields, the header {len(header)}", path)
        name = _key(row[col])
        found = by_rel.get(name) or (by_name.get(name) if "/" not in name else None)
        if isinstance(found, list):
            if len(found) > 1:
                raise QVisionError(
                    f"line {line}: '{name}' names {len(found)} images in {dataset.root}; "
                    "give its path relative to the data folder",
                    path,
                )
            found = found[0]
        if found is None:
            missing.append(name)
            continue
        if found in groups.values:
            raise QVisionError(f"line {line}: image '{name}' is listed twice", path)
        groups.values[found] = {
            a: v.strip() for a, v in zip(header, row, strict=True) if a != "image" and v.strip()
        }
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise QVisionError(f"image '{missing[0]}'{more} is not in {dataset.root}", path)
    return groups
