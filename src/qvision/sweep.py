"""``qvision sweep CONFIG.yaml``: models × targets × algorithm pipelines × weight formats,
each quantized on the same calibration images and scored against its float model on each
data folder, one results table. Every cell is a piece of work for an executor (this
process, or a Ray cluster); the float models are scored once per data folder, also as
pieces. ``auto`` targets are resolved here, on the machine that asked, not on a worker."""

from __future__ import annotations

import itertools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from qvision.errors import QVisionError
from qvision.fileio import atomic_path, write_text_atomic
from qvision.records import EvalResult, SweepResult, SweepRow
from qvision.report.sweep_page import page


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    preprocess: str | dict | None = None  # default: the model's metadata
    task: str | None = None  # default: the sweep's task, else the model's metadata


class SweepConfig(BaseModel):
    """The YAML file, checked before any work (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")
    models: list[ModelEntry | str] = Field(min_length=1)
    calib: str
    data: list[str] | str
    targets: list[str] = ["auto"]
    algorithms: list[str] = ["default"]  # comma lists, as --algos takes them
    weights: list[str] = ["int8"]
    task: str | None = None
    limit: int | None = Field(None, ge=1)  # the first N images of each data folder
    calib_limit: int | None = Field(None, ge=1)

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: list[str]) -> list[str]:
        bad = [w for w in v if w not in ("int8", "int4")]
        if bad:
            raise ValueError(f"weights are int8 or int4, not '{bad[0]}'")
        return v


@dataclass(frozen=True)
class Cell:
    model: int  # index into the job's models
    target: str
    algorithms: str
    weights: str


@dataclass(frozen=True)
class SweepJob:
    """What every piece reads: models as paths here or bytes there, folders as paths."""

    models: tuple[object, ...]
    preprocess: tuple[object, ...]  # resolved per model
    tasks: tuple[str, ...]
    calib: str
    data: tuple[str, ...]
    limit: int | None
    calib_limit: int | None
    threads: int | None


def load_config(path: str | Path) -> SweepConfig:
    """The config with its paths made absolute (relative to the config's folder) and every
    name checked: a one-line error naming the file otherwise."""
    from qvision.quant.algorithms import parse_algos
    from qvision.targets import resolve

    path = Path(path)
    if not path.is_file():
        raise QVisionError("sweep config not found", path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise QVisionError(f"not valid YAML: {str(exc).splitlines()[0]}", path) from None
    if not isinstance(raw, dict):
        raise QVisionError("a sweep config is a mapping (models:, calib:, data:, ...)", path)
    try:
        cfg = SweepConfig.model_validate(raw)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(x) for x in e["loc"])
        raise QVisionError(f"{where}: {e['msg']}", path) from None
    base = path.parent

    def absolute(p: str, what: str) -> str:
        full = (base / p).resolve()
        if not full.exists():
            raise QVisionError(f"{what} '{p}' not found", path)
        return str(full)

    models = [m if isinstance(m, ModelEntry) else ModelEntry(path=m) for m in cfg.models]
    models = [m.model_copy(update={"path": absolute(m.path, "model")}) for m in models]
    data = [cfg.data] if isinstance(cfg.data, str) else cfg.data
    for spec in cfg.algorithms:
        try:
            parse_algos(spec)
        except QVisionError as exc:
            raise QVisionError(f"algorithms: {exc.problem}", path) from None
    targets = []
    for t in cfg.targets:
        try:
            targets.append(resolve(t)[0].name)  # auto: this machine's, not a worker's
        except QVisionError as exc:
            raise QVisionError(f"targets: {exc.problem}", path) from None
    return cfg.model_copy(
        update={
            "models": models,
            "calib": absolute(cfg.calib, "calib"),
            "data": [absolute(d, "data") for d in data],
            "targets": list(dict.fromkeys(targets)),
        }
    )


def run_piece(job: SweepJob, piece: tuple):
    """``("fp32", model, data)`` → the float model's EvalResult on that folder (None when
    it has no labels);
    ``("cell", Cell)`` → (QuantizeResult, the model's bytes, an EvalResult per folder)."""
    from qvision import api
    from qvision.cluster import materialize
    from qvision.cluster.files import data_path

    if piece[0] == "fp32":
        from qvision.eval.tasks.adapters import ADAPTERS

        _, m, d = piece
        adapter = ADAPTERS[job.tasks[m]]
        if not adapter.has_truth(adapter.open(data_path(job.data[d]))):
            return None  # unlabelled: the cells measure agreement with FP32 only
        return api.evaluate(
            materialize(job.models[m]),
            data_path(job.data[d]),
            job.tasks[m],
            preprocess=job.preprocess[m],
            limit=job.limit,
            threads=job.threads,
        )
    cell: Cell = piece[1]
    fp32 = materialize(job.models[cell.model])
    with tempfile.TemporaryDirectory(prefix="qvision-sweep-") as tmp:
        out = Path(tmp) / "model.onnx"
        q = api.quantize(
            fp32,
            out,
            data_path(job.calib),
            preprocess=job.preprocess[cell.model],
            threads=job.threads,
            target=cell.target,
            weights=cell.weights,
            algos=None if cell.algorithms == "default" else cell.algorithms,
            limit=job.calib_limit,
            task=job.tasks[cell.model],
        )
        evals = [
            api.evaluate(
                out,
                data_path(d),
                job.tasks[cell.model],
                fp32,
                preprocess=job.preprocess[cell.model],
                limit=job.limit,
                threads=job.threads,
            )
            for d in job.data
        ]
        return q, out.read_bytes(), evals


def sweep(config: str | Path, out: str | Path | None = None, executor=None, progress=None):
    """Run the sweep ``config`` describes on ``executor`` (``cluster.using``; default here);
    the quantized models and the results land in ``out`` (default: ``sweep-out`` beside the
    config). A SweepResult."""
    from qvision.cluster import using
    from qvision.eval.evaluate import model_task, open_model, resolve_preprocess
    from qvision.eval.tasks.adapters import ADAPTERS

    t0 = time.perf_counter()
    cfg = load_config(config)
    out = Path(out) if out is not None else Path(config).parent / "sweep-out"
    if out.exists() and not out.is_dir():
        raise QVisionError("--out is a file, expected a folder", out)
    for folder in (cfg.calib, *cfg.data):  # never write models among the user's images
        here = out.resolve()
        if here == Path(folder) or Path(folder) in here.parents:
            raise QVisionError(f"--out lies inside the images at {folder}", out)
    pres, tasks = [], []
    for m in cfg.models:
        proto, inp = open_model(m.path)
        pres.append(resolve_preprocess(proto, m.preprocess, inp, m.path))
        task = model_task(m.path, m.task or cfg.task)
        if task not in ADAPTERS:
            raise QVisionError(f"unknown task '{task}'; available: {', '.join(ADAPTERS)}", config)
        tasks.append(task)
    cells = [
        Cell(m, t, a, w)
        for m, t, a, w in itertools.product(
            range(len(cfg.models)), cfg.targets, cfg.algorithms, cfg.weights
        )
    ]
    pieces = [("fp32", m, d) for m in range(len(cfg.models)) for d in range(len(cfg.data))]
    pieces += [("cell", c) for c in cells]
    with using(executor) as ex:
        job = SweepJob(
            tuple(ex.ship(m.path) for m in cfg.models),
            tuple(pres),
            tuple(tasks),
            cfg.calib,
            tuple(cfg.data),
            cfg.limit,
            cfg.calib_limit,
            ex.threads,
        )
        results = ex.map(run_piece, pieces, job, progress)
        name, workers = ex.name, ex.workers()
    fp32 = {p[1:]: r for p, r in zip(pieces, results, strict=True) if p[0] == "fp32"}
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for cell, (q, data, evals) in zip(cells, results[len(fp32) :], strict=True):
        written = _write_model(out, cfg.models[cell.model].path, cell, data)
        for d, ev in enumerate(evals):
            rows.append(_row(cell, cfg, q, ev, fp32[(cell.model, d)], written))
    result = SweepResult(
        config=str(config),
        out=str(out),
        executor=name,
        workers=workers,
        rows=rows,
        seconds=time.perf_counter() - t0,
    )
    write_text_atomic(out / "sweep.json", result.model_dump_json(indent=2))
    write_text_atomic(out / "sweep.html", page(result))
    return result


def _write_model(out: Path, model: str, cell: Cell, data: bytes) -> Path:
    algos = cell.algorithms.replace(",", "+")
    path = out / f"{Path(model).stem}.{cell.target}.{algos}.{cell.weights}.onnx"
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def _row(
    cell: Cell, cfg: SweepConfig, q, ev: EvalResult, ref: EvalResult | None, written
) -> SweepRow:
    from qvision.eval.tasks.adapters import ADAPTERS, points_lost

    adapter = ADAPTERS[ev.task]
    key, sign = adapter.primary if ev.dataset.labelled else ("agreement", 1)
    fp32 = 1.0 if key == "agreement" else ref.metrics.get(key)
    int8 = ev.agreement if key == "agreement" else ev.metrics.get(key)
    fid = ev.fidelity
    low = None if fid is None else fid.drop_ci95_low
    return SweepRow(
        model=cfg.models[cell.model].path,
        target=cell.target,
        algorithms=cell.algorithms,
        applied=[a.name for a in q.algorithms],
        weights=cell.weights,
        data=ev.dataset.root,
        task=ev.task,
        metric=key,
        n=ev.n,
        fp32=fp32,
        int8=int8,
        drop=None if fp32 is None or int8 is None else points_lost(fp32, int8, sign),
        drop_ci95=None if low is None else (low, fid.drop_ci95_high),
        agreement=ev.agreement,
        size_bytes=q.size_bytes["output"],
        fp32_size_bytes=q.size_bytes["input"],
        quantize_seconds=q.seconds["total"],
        output=str(written),
    )
