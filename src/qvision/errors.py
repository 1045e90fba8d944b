"""One error type for everything a user can get wrong.

The CLI prints it as a single line, ``error: <file>: <problem>``, and exits non-zero.
"""

from __future__ import annotations

from pathlib import Path


class QVisionError(Exception):
    """A problem with the user's input, reported without a traceback."""

    def __init__(self, problem: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class MissingExtraError(QVisionError):
    """An optional dependency is needed for this feature."""

    def __init__(self, module: str, extra: str, hint: str = ""):
        msg = f"this needs the '{module}' package: pip install 'qvision[{extra}]'"
        super().__init__(msg + (f" ({hint})" if hint else ""))
