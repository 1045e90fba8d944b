"""Safe file writes: never leave a half-written output, never overwrite an input."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from qvision.errors import QVisionError


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def same_file(a: str | Path, b: str | Path) -> bool:
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return os.path.samefile(pa, pb)
    return pa.resolve() == pb.resolve()


def check_output_path(
    out: str | Path,
    inputs: Iterable[str | Path | None],
    others: Iterable[str | Path | None] = (),
) -> Path:
    """Refuse, before any work, an output that would overwrite one of the inputs or land
    inside an input folder (a calibration or evaluation set), that is also another output
    of the run (``others``), or whose folder is missing or not writable."""
    out = Path(out)
    for src in inputs:
        if src is None:
            continue
        if same_file(out, src):
            raise QVisionError(
                f"output path is the input file {src}; choose another output path", out
            )
        if Path(src).is_dir() and Path(src).resolve() in out.resolve().parents:
            raise QVisionError(
                f"output path is inside the input folder {src}; choose a path outside it", out
            )
    for other in others:
        if other is not None and same_file(out, other):
            raise QVisionError(
                f"output path is also another output of this run ({other}); give each its own path",
                out,
            )
    if out.exists() and out.is_dir():
        raise QVisionError("output path is a folder; give a file name", out)
    if not out.parent.exists():
        raise QVisionError(f"output folder {out.parent} does not exist", out)
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise QVisionError("output location is not writable", out)
    return out


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# read once, at import (os.umask can only be read by setting it: racy in threads later)
_UMASK = _read_umask()


@contextlib.contextmanager
def output_set() -> Iterator[Callable[[str | Path], Path]]:
    """``stage(out)`` gives a temp path beside ``out``; when the block succeeds every staged
    file is renamed onto its output, one after the other with no work between, and when it
    fails none is: a run's model, plan and manifest are replaced together or not at all."""
    staged: list[tuple[Path, Path]] = []

    def stage(out: str | Path) -> Path:
        out = Path(out)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
        staged.append((Path(tmp), out))
        return Path(tmp)

    try:
        yield stage
        for tmp, _ in staged:  # mkstemp gives 0600; outputs get what open() would give
            os.chmod(tmp, 0o666 & ~_UMASK)
        for tmp, out in staged:
            os.replace(tmp, out)
    finally:
        for tmp, _ in staged:
            if tmp.exists():
                tmp.unlink()


@contextlib.contextmanager
def atomic_path(out: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``out``; rename it onto ``out`` only if the block succeeds."""
    with output_set() as stage:
        yield stage(out)


def write_text_atomic(out: str | Path, text: str) -> None:
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
