"""A folder followed as it grows (``qvision monitor --follow``): new image files in the order
they arrived. Only a high-water mark (change time, then name: a rename counts as a change) is kept, not the names
seen, so memory does not grow with the stream. A file is taken once it has not changed for
``settle`` seconds, so a half-written image is not read; writers that write elsewhere and
rename into the folder are safest."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from qvision.data.images import is_image_name


def _images(root: Path) -> list[tuple[int, str]]:
    found = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if is_image_name(f) and not f.startswith("."):  # dot files: still being written
                p = os.path.join(dirpath, f)
                try:
                    found.append((os.stat(p).st_ctime_ns, p))
                except OSError:  # removed while listing
                    continue
    return sorted(found)


def follow(
    root: str | Path,
    poll: float = 1.0,
    idle_stop: float | None = None,
    settle: float = 0.5,
    clock=time.monotonic,
    sleep=time.sleep,
) -> Iterator[list[Path]]:
    """Yield each poll's new, settled files (the files already there come first). Stops
    after ``idle_stop`` seconds without a new file; runs until interrupted when None."""
    root = Path(root)
    mark: tuple[int, str] = (-1, "")
    last_new = clock()
    while True:
        now_ns = time.time_ns()
        fresh = [(m, p) for m, p in _images(root) if (m, p) > mark and now_ns - m >= settle * 1e9]
        if fresh:
            mark = fresh[-1]
            last_new = clock()
            yield [Path(p) for _, p in fresh]
        elif idle_stop is not None and clock() - last_new >= idle_stop:
            return
        else:
            sleep(poll)
