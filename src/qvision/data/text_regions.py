"""OCR detection datasets: ``labels.txt`` in PaddleOCR's detection label format,
``relative/path<TAB>[{"transcription": "...", "points": [[x, y], ...]}, ...]``.

Regions whose transcription is ``###`` are "don't care" (ICDAR): neither a hit nor a miss.
A line that is not valid JSON, or a region with fewer than 3 points, is counted and left
out, never fatal; paths must stay inside the folder and exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qvision.data.datasets import (
    TEXT_LABELS,
    Dataset,
    Problems,
    Sample,
    _existing_dir,
    label_lines,
)
from qvision.errors import QVisionError

DONT_CARE = "###"


@dataclass
class TextRegions(Problems):
    # image_id -> [(polygon [K, 2] float, don't care)]
    regions: dict[int, list[tuple[np.ndarray, bool]]] = field(default_factory=dict)


def _regions(raw: str, regions: TextRegions, where: str) -> list[tuple[np.ndarray, bool]] | None:
    try:
        items = json.loads(raw)
    except json.JSONDecodeError:
        regions.note("line whose regions are not JSON", where)
        return None
    if not isinstance(items, list):
        regions.note("line whose regions are not a JSON list", where)
        return None
    out = []
    for item in items:
        try:
            poly = np.asarray(item["points"], dtype=np.float64)
            ok = poly.ndim == 2 and poly.shape[0] >= 3 and poly.shape[1] == 2
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            regions.note("region without 3 or more [x, y] points", where)
            continue
        out.append((poly, str(item.get("transcription", "")) == DONT_CARE))
    return out


def open_text_regions(root: str | Path) -> Dataset:
    root = _existing_dir(root)
    regions = TextRegions()
    samples = []
    for n, file, raw in label_lines(root, "regions"):
        found = _regions(raw, regions, f"line {n}")
        if found is None:
            continue
        regions.regions[len(samples)] = found
        samples.append(Sample(file, image_id=len(samples)))
    if not samples:
        raise QVisionError("no image with readable regions", root / TEXT_LABELS)
    return Dataset(root, samples, annotations=regions)
