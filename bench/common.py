"""Helpers shared by the benchmark scripts: paths, the shared data set, BENCHMARKS.md sections."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
BENCHMARKS = ROOT / "BENCHMARKS.md"
# The ImageNet sample lives beside the repository; tests and benchmarks only, never shipped.
IMAGENET = Path(
    os.environ.get("QVISION_IMAGENET", ROOT.parent / "shared" / "data" / "imagenet-sample-1k")
)


def require_imagenet() -> Path:
    if not (IMAGENET / "eval").is_dir():
        raise SystemExit(f"ImageNet sample not found at {IMAGENET} (set QVISION_IMAGENET)")
    return IMAGENET


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section between this benchmark's markers in BENCHMARKS.md."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = BENCHMARKS.read_text(encoding="utf-8") if BENCHMARKS.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + block + "\n"
    )
    tmp = BENCHMARKS.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, BENCHMARKS)
