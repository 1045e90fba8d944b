"""Provenance: ``<output stem>.manifest.json`` beside every quantized model, saying exactly
what went in and came out (SHA-256 of model, plan and calibration set), with which
versions, on which machine and target, by which command, and when."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel

from qvision.fileio import sha256_file, write_text_atomic
from qvision.model.load import external_data_files, model_size


class FileRecord(BaseModel):
    path: str
    sha256: str  # of this file alone
    size_bytes: int  # a model's: with its external data
    # an ONNX model's external-data files: the sha256 above does not cover them
    external_data: list[FileRecord] = []

    @classmethod
    def of(cls, path: str | Path, read: str | Path | None = None) -> FileRecord:
        """``path``'s record, its bytes read from ``read`` (a staged copy) when given."""
        p, src = Path(path), Path(read or path)
        return cls(path=str(p), sha256=sha256_file(src), size_bytes=src.stat().st_size)

    @classmethod
    def of_model(cls, path: str | Path, read: str | Path | None = None) -> FileRecord:
        """An ONNX model and the external-data files beside it that it needs."""
        p, src = Path(path), Path(read or path)
        return cls(
            path=str(p),
            sha256=sha256_file(src),
            size_bytes=model_size(src),
            external_data=[cls.of(f) for f in external_data_files(src)],
        )


class DataRecord(BaseModel):
    root: str
    images: int
    sha256: str  # DatasetManifest.sha256: one digest over every file's path, hash and label


class MonitorBaseline(BaseModel):
    """What ``qvision monitor`` compares a stream with (qvision.monitor.baseline)."""

    images: int  # calibration images the input statistics come from
    task: str | None  # how agreement with FP32 is scored
    features: list[list[float]]  # per image: each channel's mean, then each one's spread
    saturation_images: int
    # grid input tensor -> per calibration image, the share of its values outside the range
    saturation: dict[str, list[float]]


class Provenance(BaseModel):
    kind: str = "qvision-manifest"
    command: list[str]
    started: str
    finished: str
    input_model: FileRecord
    output_model: FileRecord
    plan: FileRecord | None = None
    plan_in: FileRecord | None = None
    calibration: DataRecord | None = None
    target: str  # the target the model was written for
    target_reason: str
    plan_target: str | None = None  # the target the plan was made for (a replayed plan's own)
    config: dict
    versions: dict[str, str]
    cpu: dict
    monitor: MonitorBaseline | None = None  # the calibration baseline for the monitor


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def manifest_path(output: str | Path) -> Path:
    out = Path(output)
    return out.with_name(f"{out.stem}.manifest.json")


def write_manifest(record: Provenance, output: str | Path, to: str | Path | None = None) -> Path:
    """Written atomically beside ``output`` (or to ``to``, a staged path for it): an
    interrupted run keeps the previous one."""
    path = manifest_path(output)
    if to is not None:
        Path(to).write_text(record.model_dump_json(indent=1), encoding="utf-8")
    else:
        write_text_atomic(path, record.model_dump_json(indent=1))
    return path


def read_manifest(path: str | Path | None) -> dict | None:
    """A manifest written by ``write_manifest``, or None when there is none."""
    if not path or not Path(path).is_file():
        return None
    import json

    return json.loads(Path(path).read_text(encoding="utf-8"))


def command_line() -> list[str]:
    return [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
