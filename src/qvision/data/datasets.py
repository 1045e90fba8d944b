"""Image datasets on disk: a plain folder (no labels), an ImageFolder (class folders), or
text lines (``labels.txt``: ``relative/path<TAB>text`` per line, for OCR recognition)."""

from __future__ import annotations

import copy
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qvision.data.images import IMAGE_EXTENSIONS, image_size, is_image_name, load_image
from qvision.data.preprocess import Preprocess, collate
from qvision.errors import QVisionError


@dataclass
class Sample:
    path: Path
    label: int | None = None
    text: str | None = None  # OCR recognition ground truth
    image_id: int | None = None  # detection: the COCO image id of its ground truth
    mask: Path | None = None  # segmentation: class-index PNG


@dataclass
class Problems:
    """Annotation problems counted (with one example each) instead of stopping a run."""

    problems: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def note(self, kind: str, example: str) -> None:
        self.problems[kind] += 1
        self.examples.setdefault(kind, example)

    def warnings(self) -> list[str]:
        return [f"{n} x {kind} (e.g. {self.examples[kind]})" for kind, n in self.problems.items()]


@dataclass
class Dataset:
    """A list of image files with optional integer labels and class names."""

    root: Path
    samples: list[Sample]
    classes: list[str] = field(default_factory=list)  # index -> class name (e.g. WordNet id)
    annotations: object | None = None  # task ground truth beyond per-sample labels (COCO)

    @property
    def labelled(self) -> bool:
        return bool(self.samples) and all(s.label is not None for s in self.samples)

    @property
    def has_text(self) -> bool:
        return bool(self.samples) and all(s.text is not None for s in self.samples)

    def __len__(self) -> int:
        return len(self.samples)


def _image_files(folder: Path) -> list[Path]:
    """Images under ``folder``, in sorted order, following symlinked sub-folders (a data set
    assembled from links) but entering each real folder once, so a link loop ends."""
    files, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(
            Path(dirpath) / f
            for f in sorted(filenames)
            if is_image_name(f) and not f.startswith(".")
        )
    return files


def _read_classes(path: Path) -> list[str]:
    names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    if len(set(names)) != len(names):
        raise QVisionError("class list has duplicate names", path)
    return names


def image_folder(root: str | Path) -> Dataset:
    """Plain folder of images, searched recursively; no labels."""
    root = _existing_dir(root)
    files = _image_files(root)
    if not files:
        raise QVisionError(f"no images found (looked for {', '.join(IMAGE_EXTENSIONS)})", root)
    return Dataset(root, [Sample(f) for f in files])


def labelled_folder(root: str | Path) -> Dataset:
    """ImageFolder layout: ``root/<class>/*.jpg``.

    The class index comes from ``root/classes.txt`` (one name a line, line N = index N)
    when it exists, so a split holding only some classes keeps the global indices;
    otherwise from the sorted class-folder names.
    """
    root = _existing_dir(root)
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes_file = root / "classes.txt"
    if classes_file.is_file():
        classes = _read_classes(classes_file)
        index = {name: i for i, name in enumerate(classes)}
        unknown = [d.name for d in class_dirs if d.name not in index]
        if unknown:
            raise QVisionError(
                f"class folder '{unknown[0]}' is not listed in classes.txt ({len(unknown)} unlisted)",
                root,
            )
    else:
        classes = [d.name for d in class_dirs]
        index = {name: i for i, name in enumerate(classes)}
    samples = [Sample(f, index[d.name]) for d in class_dirs for f in _image_files(d)]
    if not samples:
        raise QVisionError(
            f"no images found in class folders (looked for {', '.join(IMAGE_EXTENSIONS)})", root
        )
    return Dataset(root, samples, classes)


TEXT_LABELS = "labels.txt"


def text_lines(root: str | Path) -> Dataset:
    """OCR recognition layout: ``root/labels.txt`` lists ``relative/path<TAB>text``."""
    root = _existing_dir(root)
    samples = [Sample(file, text=text) for _, file, text in label_lines(root, "text")]
    if not samples:
        raise QVisionError("no labelled lines", root / TEXT_LABELS)
    return Dataset(root, samples)


def label_lines(root: Path, what: str) -> Iterator[tuple[int, Path, str]]:
    """(line number, image path, rest) for each ``relative/path<TAB>rest`` line of labels.txt.

    Paths must stay inside ``root``; a listed file that does not exist is an error naming
    the line, so a mistyped label file never silently shrinks the set."""
    path = root / TEXT_LABELS
    if not path.is_file():
        raise QVisionError(f"no {TEXT_LABELS}", root)
    base = root.resolve()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        rel, tab, rest = line.partition("\t")
        if not tab:
            raise QVisionError(f"line {n} has no TAB between path and {what}", path)
        file = (root / rel).resolve()
        if base not in file.parents:
            raise QVisionError(f"line {n} points outside the dataset folder: {rel}", path)
        if not file.is_file():
            raise QVisionError(f"line {n}: image not found: {rel}", path)
        yield n, root / rel, rest


def open_dataset(root: str | Path, labels: bool | None = None) -> Dataset:
    """Text lines when the folder has labels.txt; ImageFolder when it has class sub-folders
    (or ``labels=True``); else a plain folder."""
    root = _existing_dir(root)
    if labels is None and (root / TEXT_LABELS).is_file():
        return text_lines(root)
    if labels is None:
        has_loose = any(p.is_file() and is_image_name(p) for p in root.iterdir())
        has_dirs = any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir())
        labels = has_dirs and not has_loose
    return labelled_folder(root) if labels else image_folder(root)


def _existing_dir(root: str | Path) -> Path:
    root = Path(root)
    if not root.exists():
        raise QVisionError("folder not found", root)
    if not root.is_dir():
        raise QVisionError("is not a folder of images", root)
    return root


@dataclass
class Batch:
    inputs: np.ndarray  # [n, ...] float32
    samples: list[Sample]


def first_readable(dataset: Dataset, n: int) -> tuple[Dataset, list[tuple[str, str]]]:
    """The first ``n`` samples that decode (so ``--limit n`` uses n images when some are
    unreadable) and the unreadable ones passed over on the way, with their reasons."""
    keep, bad = [], []
    for sample in dataset.samples:
        if len(keep) == n:
            break
        try:
            load_image(sample.path)
        except QVisionError as exc:
            bad.append((str(sample.path), exc.problem))
            continue
        keep.append(sample)
    out = copy.copy(dataset)
    out.samples = keep
    return out, bad


@dataclass
class LoadReport:
    """Files that could not be decoded, each with its reason."""

    skipped: list[tuple[str, str]] = field(default_factory=list)


def _stack(items: list[np.ndarray], preprocess: Preprocess) -> np.ndarray:
    """One batch: ``line`` preprocessing pads its lines to the widest, as PaddleOCR pads a
    batch; in the other modes every tensor has the same size (or that is an error)."""
    if preprocess.resize_mode == "line":
        return collate(items, preprocess.pad_value)
    return np.stack(items)


def batch_order(dataset: Dataset, preprocess: Preprocess, batch_size: int) -> list[int]:
    """Sample positions in the order they are batched. Lines (``line`` preprocessing) go
    by aspect ratio, as PaddleOCR batches its crops: a batch then pads its lines to a
    width they nearly have, instead of a short line to the widest of 32 random ones
    (which pads far more than any calibration image and than the deployed pipeline does)."""
    positions = list(range(len(dataset.samples)))
    if preprocess.resize_mode != "line" or batch_size == 1:
        return positions

    def ratio(i: int) -> float:
        try:
            w, h = image_size(dataset.samples[i].path)
        except QVisionError:
            return 0.0  # unreadable: skipped (and reported) when decoded
        return w / max(h, 1)

    return sorted(positions, key=ratio)


def iter_batches(
    dataset: Dataset,
    preprocess: Preprocess,
    batch_size: int,
    strict: bool = False,
    report: LoadReport | None = None,
    workers: int = 2,
    transform=None,
) -> Iterator[Batch]:
    """Decode and preprocess in a small thread pool (Pillow releases the GIL), in order
    (text lines: in order of width; each batch carries its samples).

    Unreadable files are skipped and recorded in ``report``, or raise with ``strict``.
    Inputs of different widths (``line`` preprocessing) are padded to the batch's widest.
    ``transform(image, index)`` (robustness corruptions) runs between decoding and
    preprocessing; ``index`` is the sample's position in the dataset.
    """
    report = report if report is not None else LoadReport()

    def work(item: tuple[int, Sample]):
        index, sample = item
        try:
            img = load_image(sample.path)
            return preprocess.apply(transform(img, index) if transform else img)
        except QVisionError as exc:
            if strict:
                raise
            return exc

    pending_inputs: list[np.ndarray] = []
    pending_samples: list[Sample] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # map() keeps order; a bounded window keeps memory flat on big folders.
        window = max(batch_size * 2, 8)
        order = batch_order(dataset, preprocess, batch_size)
        for start in range(0, len(order), window):
            items = [(i, dataset.samples[i]) for i in order[start : start + window]]
            for (_, sample), result in zip(items, pool.map(work, items), strict=True):
                if isinstance(result, QVisionError):
                    report.skipped.append((str(sample.path), result.problem))
                    continue
                pending_inputs.append(result)
                pending_samples.append(sample)
                if len(pending_inputs) == batch_size:
                    yield Batch(_stack(pending_inputs, preprocess), pending_samples)
                    pending_inputs, pending_samples = [], []
    if pending_inputs:
        yield Batch(_stack(pending_inputs, preprocess), pending_samples)
