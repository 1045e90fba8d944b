"""Models sent to workers as bytes: a cluster's nodes need not share a disk with the driver,
so a task carries the model file (and its external-data files) and each worker writes it
once into its own temporary folder. Data folders travel as paths (mounted on every node)."""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from qvision.errors import QVisionError


@dataclass(frozen=True)
class ModelFile:
    """An ONNX model as bytes: ``files`` maps names relative to the model's folder (the
    model first) to their contents; ``sha256`` of them all names it on the workers."""

    files: tuple[tuple[str, bytes], ...]
    sha256: str
    source: str  # the path on the driver, for messages

    @classmethod
    def read(cls, path: str | Path) -> ModelFile:
        from qvision.model.load import model_files

        path = Path(path)
        paths = model_files(path)  # refuses external data outside the model's folder
        files = tuple((p.relative_to(path.parent).as_posix(), p.read_bytes()) for p in paths)
        digest = hashlib.sha256()
        for name, data in files:
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        return cls(files, digest.hexdigest(), str(path))


_here: dict[str, Path] = {}  # sha256 -> the model's path in this process's folder
_folder: Path | None = None


def materialize(model: str | Path | ModelFile) -> Path:
    """A path to ``model`` on this machine: a path as given, a ``ModelFile`` written once per
    process (a worker runs many pieces of the same model)."""
    global _folder
    if not isinstance(model, ModelFile):
        return Path(model)
    if model.sha256 in _here:
        return _here[model.sha256]
    if _folder is None:
        _folder = Path(tempfile.mkdtemp(prefix="qvision-models-"))
        atexit.register(shutil.rmtree, _folder, True)
    root = _folder / model.sha256[:16]
    for name, data in model.files:
        target = (root / name).resolve()
        if root.resolve() not in target.parents:
            raise QVisionError(f"model file name '{name}' leaves its folder", model.source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    _here[model.sha256] = root / model.files[0][0]
    return _here[model.sha256]


def data_path(path: str | Path) -> Path:
    """A data folder as a worker sees it: the same path on every node (a shared mount)."""
    import socket

    path = Path(path)
    if not path.exists():
        raise QVisionError(
            f"not found on node {socket.gethostname()}; a cluster's nodes need the data "
            "at the same path (a shared volume)",
            path,
        )
    return path
