"""Where independent pieces of work run: in this process (``local``, the default, needs no
Ray) or as tasks on a Ray cluster (``ray``: ``RAY_ADDRESS`` or ``ray start``'s cluster, else
a new one on this machine).

A piece is ``fn(shared, item)``: ``fn`` a module-level function (sent by reference, so the
workers need qvision installed), ``shared`` values every piece reads (model files, options;
put once in Ray's object store), ``item`` the piece's own arguments. ``map`` returns the
results in item order, each exactly once: a piece whose worker dies is run again by Ray,
and only its first finished result is kept."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from qvision.cluster.files import ModelFile, materialize

Progress = Callable[[int, int], None]  # (done, total)
EXECUTORS = ("local", "ray")


class Executor(Protocol):
    name: str
    threads: int | None  # ONNX Runtime threads per piece (None: all cores)

    def workers(self) -> int:
        """How many pieces can run at once."""
        ...

    def map(
        self,
        fn: Callable[[Any, Any], Any],
        items: Sequence[Any],
        shared: Any = None,
        progress: Progress | None = None,
    ) -> list[Any]: ...

    def ship(self, path: str | Path) -> str | Path | ModelFile:
        """A model as the pieces receive it: a path here, its bytes for a cluster."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """Every piece in this process, one after another (``threads`` per piece)."""

    name = "local"

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def workers(self) -> int:
        return 1

    def ship(self, path: str | Path) -> Path:
        return Path(path)

    def close(self) -> None:
        pass

    def map(self, fn, items, shared=None, progress=None) -> list[Any]:
        out = []
        for k, item in enumerate(items):
            out.append(fn(shared, item))
            if progress:
                progress(k + 1, len(items))
        return out


def make_executor(name: str, threads: int | None = None, **options) -> Executor:
    """``local`` or ``ray`` (options: ``address``, ``cpus_per_task``, ``max_retries``)."""
    from qvision.errors import QVisionError

    if name == "local":
        return LocalExecutor(threads)
    if name == "ray":
        from qvision.cluster.ray_executor import RayExecutor

        return RayExecutor(**options)
    raise QVisionError(f"unknown executor '{name}'; available: {', '.join(EXECUTORS)}")


_opened: dict[str, Any] = {}  # the job this process last opened, by its key


def _key(job) -> str:
    """A job's identity from its fields: models by content, bytes by digest, pydantic
    models by their JSON, the rest by repr."""
    parts = [type(job).__qualname__]
    for f in dataclasses.fields(job):
        v = getattr(job, f.name)
        if isinstance(v, ModelFile):
            v = v.sha256
        elif isinstance(v, bytes):
            v = hashlib.sha256(v).hexdigest()
        elif hasattr(v, "model_dump_json"):
            v = v.model_dump_json()
        parts.append(f"{f.name}={v!r}")
    return "\n".join(parts)


def opened(job, open_job: Callable[[Any], Any]):
    """``open_job(job)`` (sessions, images), kept for the next piece of the same job in this
    process: a worker serves many pieces of one job, one job at a time."""
    key = _key(job)
    if key not in _opened:
        _opened.clear()
        _opened[key] = open_job(job)
    return _opened[key]


@contextlib.contextmanager
def using(executor: str | Executor | None, threads: int | None = None, cpus_per_task: int = 1):
    """An Executor by name, closed afterwards (a Ray cluster it started stops), or as given
    (None: this process)."""
    if executor is None:
        executor = "local"
    if not isinstance(executor, str):
        yield executor
        return
    ex = make_executor(executor, threads, cpus_per_task=cpus_per_task)
    try:
        yield ex
    finally:
        ex.close()


__all__ = [
    "EXECUTORS",
    "Executor",
    "LocalExecutor",
    "ModelFile",
    "make_executor",
    "materialize",
    "using",
]
