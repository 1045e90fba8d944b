"""Scoring a model on a task's data: open the model and its preprocessing, run it batch by
batch (ONNX Runtime or a given runner) beside an optional float reference, and let the
task's adapter keep the metrics. Used by the API, robustness, autotune and the report."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from qvision.cluster import Executor, using
from qvision.data import LoadReport, Preprocess, build_manifest, iter_batches, parse_preprocess
from qvision.data.groups import Groups, read_groups
from qvision.data.preprocess import METADATA_KEY, TASK_KEY
from qvision.errors import QVisionError
from qvision.eval.remote import feed_remote
from qvision.eval.tasks.adapters import ADAPTERS
from qvision.fileio import sha256_file
from qvision.model import image_input, load_model
from qvision.model.load import ImageInput, fixed_batch
from qvision.records import (
    DatasetInfo,
    Environment,
    EvalResult,
    Fidelity,
    Prediction,
    SkippedFile,
)
from qvision.runtime.machine import cpu_info, versions
from qvision.runtime.session import make_session
from qvision.targets import QUANT_METADATA_KEY, saturation_warning

Progress = Callable[[int, int], None]  # (done, total)


def environment() -> Environment:
    return Environment(versions=versions(), cpu=cpu_info())


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def resolve_preprocess(
    model: onnx.ModelProto, given: str | dict | Preprocess | None, inp: ImageInput, path: str | Path
) -> Preprocess:
    """The explicit setting, else the model's ``qvision.preprocess`` metadata; checked against the input."""
    if given is not None:
        pre = parse_preprocess(given)
    elif METADATA_KEY in metadata(model):
        pre = parse_preprocess(metadata(model)[METADATA_KEY])
    else:
        raise QVisionError(
            "model carries no preprocessing metadata; pass --preprocess imagenet|tf|FILE", path
        )
    # The model decides the layout; the spec only describes pixels.
    pre = pre.model_copy(update={"layout": inp.layout})
    if pre.channels != inp.channels:
        raise QVisionError(
            f"preprocessing gives {pre.channels} channel(s) but input '{inp.name}' takes {inp.channels}",
            path,
        )
    hw = pre.output_hw()
    if hw is None and pre.resize_mode == "line":
        _check_line_input(pre, inp, path)
        return pre
    want = (inp.height, inp.width)
    if hw is not None and any(w is not None and w != h for w, h in zip(want, hw, strict=True)):
        shown = "x".join("?" if w is None else str(w) for w in want)
        raise QVisionError(
            f"preprocessing gives {hw[0]}x{hw[1]} images but input '{inp.name}' takes {shown}", path
        )
    if hw is None and None not in want:
        raise QVisionError(
            f"preprocessing has no fixed output size; input '{inp.name}' needs {want[0]}x{want[1]} (set crop)",
            path,
        )
    return pre


def _check_line_input(pre: Preprocess, inp: ImageInput, path: str | Path) -> None:
    """``line`` preprocessing fixes the rows only: each line gets its own width."""
    height = pre.resize[0]
    if inp.height is not None and inp.height != height:
        raise QVisionError(
            f"preprocessing gives lines {height} pixels high but input '{inp.name}' takes {inp.height}",
            path,
        )
    if inp.width is not None:
        raise QVisionError(
            f"resize_mode 'line' gives each line its own width but input '{inp.name}' takes "
            f"a fixed width {inp.width}; use resize_mode 'height' with resize [{height}, {inp.width}]",
            path,
        )


def model_task(path: str | Path, given: str | None = None) -> str:
    """``given``, else the model's 'qvision.task' metadata, else classification."""
    if given:
        return given
    try:
        meta = metadata(onnx.load(str(path), load_external_data=False))
    except Exception:  # unreadable here: the loader says why when the model is opened
        return "classification"
    return meta.get(TASK_KEY) or "classification"


def open_model(path: str | Path) -> tuple[onnx.ModelProto, ImageInput]:
    model = load_model(path)
    return model, image_input(model, path)


class Runner:
    """Runs a session on batches, padding to a fixed batch size when the model demands one."""

    def __init__(self, path: str | Path, inp: ImageInput, threads: int | None):
        self.session = make_session(path, threads)
        self.name = inp.name
        self.fixed_batch = inp.batch
        self.path = str(path)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if self.fixed_batch is not None and n > self.fixed_batch:
            # a reference fixed at a smaller batch than the model scored beside it
            parts = [self(x[i : i + self.fixed_batch]) for i in range(0, n, self.fixed_batch)]
            return [np.concatenate(outs) for outs in zip(*parts, strict=True)]
        if self.fixed_batch is not None and n != self.fixed_batch:
            pad = np.zeros((self.fixed_batch - n, *x.shape[1:]), dtype=x.dtype)
            x = np.concatenate([x, pad])
        try:
            outs = self.session.run(None, {self.name: x})
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise QVisionError(f"inference failed: {first}", self.path) from None
        return [o[:n] for o in outs]


def open_task(model, data, task: str, preprocess, limit: int | None):
    """The model, its input, the preprocessing, the task's adapter class and its dataset."""
    if task not in ADAPTERS:
        raise QVisionError(f"unknown task '{task}'; available: {', '.join(ADAPTERS)}")
    proto, inp = open_model(model)
    pre = resolve_preprocess(proto, preprocess, inp, model)
    adapter_cls = ADAPTERS[task]
    dataset = adapter_cls.open(data)
    if limit:
        dataset.samples = dataset.samples[:limit]
    return proto, inp, pre, adapter_cls, dataset


def open_groups(path: str | Path, task: str, dataset, reference: bool) -> Groups:
    """``--groups``' CSV read against the evaluation images, checked before any model runs:
    per-group harm needs labelled classification images and a reference model."""
    if not getattr(ADAPTERS.get(task), "per_group", False):
        raise QVisionError(f"--groups: per-group harm is measured for classification, not {task}")
    if not reference:
        raise QVisionError("--groups needs --reference FP32.onnx (harm is measured against it)")
    if not dataset.labelled:
        raise QVisionError("--groups needs labelled images (class folders)", dataset.root)
    return read_groups(path, dataset)


def evaluate(
    model: str | Path,
    data: str | Path,
    task: str = "classification",
    reference: str | Path | None = None,
    *,
    preprocess: str | dict | Preprocess | None = None,
    batch_size: int = 32,
    threads: int | None = None,
    strict: bool = False,
    limit: int | None = None,
    keep_predictions: bool = False,
    progress: Progress | None = None,
    decoder: dict | None = None,
    runner: Callable[[np.ndarray], list[np.ndarray]] | None = None,
    alphabet: str | Path | None = None,
    groups: str | Path | None = None,
    executor: str | Executor | None = None,
    cpus_per_task: int = 1,
) -> EvalResult:
    """Score ``model`` on the images in ``data``: task metrics if labelled, fidelity to ``reference``.

    ``runner`` maps an input batch to the model's outputs in place of an ONNX Runtime
    session (``model`` is still read for its input and metadata): another runtime's
    compiled model, scored by the same loop. ``alphabet``: an OCR recognizer's dictionary
    file, for a model without ``character`` metadata. ``groups``: a CSV of image
    attributes (``image,<attribute>...``) for per-group harm against ``reference``.
    ``executor`` (``local``, ``ray`` or a ``cluster`` Executor): where shards of the images are decoded and
    run (default: here); the outputs are scored here, in order (``eval/remote.py``)."""
    if isinstance(executor, str):
        with using(executor, threads, cpus_per_task) as ex:
            return evaluate(
                model,
                data,
                task,
                reference,
                preprocess=preprocess,
                batch_size=batch_size,
                threads=threads,
                strict=strict,
                limit=limit,
                keep_predictions=keep_predictions,
                progress=progress,
                decoder=decoder,
                runner=runner,
                alphabet=alphabet,
                groups=groups,
                executor=ex,
            )
    start = time.perf_counter()
    proto, inp, pre, adapter_cls, dataset = open_task(model, data, task, preprocess, None)
    # groups name images of the whole folder, so they are checked before --limit
    by_group = None
    if groups is not None:
        by_group = open_groups(groups, task, dataset, reference is not None)
    if limit:
        dataset.samples = dataset.samples[:limit]
    has_truth = adapter_cls.has_truth(dataset)
    if not has_truth and reference is None and not keep_predictions:
        raise QVisionError(
            f"images have {adapter_cls.truth}; pass --reference FP32.onnx for label-free fidelity",
            data,
        )
    remote = executor is not None and executor.name != "local"
    if remote and runner is not None:
        raise QVisionError("a custom runner runs in this process: use the local executor")
    if reference is not None:
        _, ref_inp = open_model(reference)
        if (ref_inp.channels, ref_inp.height, ref_inp.width) != (
            inp.channels,
            inp.height,
            inp.width,
        ):
            raise QVisionError(
                "reference model takes a different input shape than the model", reference
            )
    batch_size = inp.batch or batch_size
    names = _json_list(metadata(proto).get("qvision.labels"))
    adapter = adapter_cls(
        metadata(proto),
        names,
        model,
        keep_predictions,
        dataset=dataset,
        preprocess=pre,
        decoder=decoder,
        alphabet=alphabet,
        groups=by_group,
    )
    load = LoadReport()
    if remote:
        done = feed_remote(
            adapter,
            dataset,
            executor,
            load,
            progress,
            model=model,
            reference=reference,
            data=data,
            task=task,
            preprocess=pre,
            batch_size=batch_size,
            strict=strict,
        )
    else:
        run = runner or Runner(model, inp, threads)
        ref_run = None if reference is None else Runner(reference, ref_inp, threads)
        reference_of = None if ref_run is None else (lambda _i, x: ref_run(x))
        done = feed(adapter, dataset, pre, batch_size, run, reference_of, strict, load, progress)
    if done == 0:
        raise QVisionError(f"none of the {len(dataset)} images could be read", data)
    with_ref = reference is not None
    metrics, agreement, fid = adapter.result(with_ref)
    fidelity = Fidelity(**fid) if fid is not None else None
    predictions = [
        Prediction(path=p, top5=top, labels=shown) for p, top, shown in adapter.predictions
    ]
    return EvalResult(
        task=task,
        model=str(model),
        model_sha256=sha256_file(model),
        n=done,
        metrics=metrics,
        metrics_ci95=adapter.intervals() if hasattr(adapter, "intervals") else {},
        agreement=agreement,
        reference=None if reference is None else str(reference),
        fidelity=fidelity,
        dataset=DatasetInfo(
            root=str(dataset.root),
            files=len(dataset),
            used=done,
            skipped=[SkippedFile(path=p, reason=r) for p, r in load.skipped],
            labelled=has_truth,
            sha256=build_manifest(dataset).sha256,
        ),
        preprocess=pre.model_dump(),
        batch_size=batch_size,
        seconds=time.perf_counter() - start,
        predictions=predictions,
        warnings=[*_target_warnings(proto), *getattr(adapter, "warnings", [])],
        harm=adapter.harm() if with_ref and hasattr(adapter, "harm") else None,
        class_ap=adapter.class_ap() if with_ref and hasattr(adapter, "class_ap") else None,
        env=environment(),
        executor=executor.name if remote else "local",
        workers=executor.workers() if remote else 1,
    )


def feed(
    adapter,
    dataset,
    pre: Preprocess,
    batch_size: int,
    run: Callable[[np.ndarray], list[np.ndarray]],
    reference_of: Callable[[int, np.ndarray], list[np.ndarray]] | None = None,
    strict: bool = False,
    load: LoadReport | None = None,
    progress: Progress | None = None,
) -> int:
    """The scoring loop: every batch through ``run`` (and the reference's outputs for that
    batch index) into the task's adapter; the number of images scored."""
    load = load if load is not None else LoadReport()
    done = 0
    for i, batch in enumerate(iter_batches(dataset, pre, batch_size, strict=strict, report=load)):
        ref = reference_of(i, batch.inputs) if reference_of is not None else None
        adapter.update(run(batch.inputs), batch.samples, ref)
        done += len(batch.samples)
        if progress:
            progress(done + len(load.skipped), len(dataset))
    return done


class Comparison:
    """Candidate models of one float model scored on the same images by the same loop as
    ``evaluate``, the float model's outputs computed once (autotune's trials). Candidates
    come as model bytes, so a trial never touches the disk."""

    REF_CACHE_BYTES = 512 * 2**20  # float outputs kept between candidates up to this size

    def __init__(
        self,
        reference: bytes,
        data: str | Path,
        task: str,
        preprocess: Preprocess,
        input_name: str,
        limit: int | None = None,
        threads: int | None = None,
    ):
        self.adapter = ADAPTERS[task]
        self.dataset = self.adapter.open(data)
        if limit:
            self.dataset.samples = self.dataset.samples[:limit]
        self.pre, self.input, self.threads, self.source = preprocess, input_name, threads, data
        proto = onnx.load_from_string(reference)
        self.metadata = metadata(proto)
        self.batch = fixed_batch(proto.graph.input[0]) or 32
        self.labelled = self.adapter.has_truth(self.dataset)
        self.reference = make_session(reference, threads)
        self.cached: list | None = None  # the reference's outputs per batch
        self.images = 0

    def score(self, model: bytes) -> tuple[dict[str, float], float | None, dict | None]:
        """(task metrics, agreement with the reference, fidelity figures) of ``model``."""
        sess = make_session(model, self.threads)
        adapter = self.adapter(
            self.metadata, [], self.source, dataset=self.dataset, preprocess=self.pre
        )
        fresh, size = [], 0

        def reference_of(i: int, x: np.ndarray) -> list[np.ndarray]:
            nonlocal size
            if self.cached is not None:
                return self.cached[i]
            outs = self.reference.run(None, {self.input: x})
            fresh.append(outs)
            size += sum(o.nbytes for o in outs)
            return outs

        def run(x: np.ndarray) -> list[np.ndarray]:
            return sess.run(None, {self.input: x})

        self.images = feed(adapter, self.dataset, self.pre, self.batch, run, reference_of)
        if self.cached is None and size <= self.REF_CACHE_BYTES:
            self.cached = fresh
        return adapter.result(True)


def _target_warnings(proto: onnx.ModelProto) -> list[str]:
    """A model quantized for another CPU's kernels (from the writer's metadata)."""
    import json

    try:
        made = json.loads(metadata(proto).get(QUANT_METADATA_KEY, "{}")).get("target")
    except (json.JSONDecodeError, AttributeError):
        return []
    warning = saturation_warning(made if isinstance(made, str) else None)
    return [warning] if warning else []


def _json_list(text: str | None) -> list[str]:
    import json

    if not text:
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []
