"""The public API. The CLI is a thin layer over these functions.

quantize() arrives with the PTQ engine; it will take the same model/data/preprocess
arguments and return a result of the same schema family.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from qvision.config import QuantConfig
from qvision.data import (
    LoadReport,
    Preprocess,
    build_manifest,
    iter_batches,
    open_dataset,
    parse_preprocess,
)
from qvision.data.manifest import DatasetManifest
from qvision.data.preprocess import METADATA_KEY
from qvision.errors import QVisionError
from qvision.fileio import check_output_path, sha256_file
from qvision.model import GraphView, image_input, load_model, save_model
from qvision.model.load import ImageInput, default_opset, graph_inputs, model_size
from qvision.report.schema import (
    BatchBench,
    BenchResult,
    DatasetInfo,
    Environment,
    EvalResult,
    Fidelity,
    ModelBench,
    ModelInfo,
    Prediction,
    SkippedFile,
    ZooExportResult,
)
from qvision.runtime.bench import peak_rss, time_interleaved
from qvision.runtime.inputs import model_hw
from qvision.runtime.machine import cpu_info, physical_cores, versions
from qvision.runtime.session import make_session
from qvision.targets import saturation_warning
from qvision.tasks import TASKS
from qvision.tasks.adapters import ADAPTERS
from qvision.writer.qdq import QUANT_METADATA_KEY

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
    if task not in TASKS:
        raise QVisionError(f"unknown task '{task}'; available: {', '.join(TASKS)}")
    proto, inp = open_model(model)
    pre = resolve_preprocess(proto, preprocess, inp, model)
    adapter_cls = ADAPTERS[task]
    dataset = adapter_cls.open(data)
    if limit:
        dataset.samples = dataset.samples[:limit]
    return proto, inp, pre, adapter_cls, dataset


def evaluate(
    model: str | Path,
    data: str | Path,
    task: str = "classification",
    reference: str | Path | None = None,
    preprocess: str | dict | Preprocess | None = None,
    batch_size: int = 32,
    threads: int | None = None,
    strict: bool = False,
    limit: int | None = None,
    keep_predictions: bool = False,
    progress: Progress | None = None,
    decoder: dict | None = None,
    runner: Callable[[np.ndarray], list[np.ndarray]] | None = None,
) -> EvalResult:
    """Score ``model`` on the images in ``data``: task metrics if labelled, fidelity to ``reference``.

    ``runner`` maps an input batch to the model's outputs in place of an ONNX Runtime
    session (``model`` is still read for its input and metadata): another runtime's
    compiled model, scored by the same loop."""
    start = time.perf_counter()
    proto, inp, pre, adapter_cls, dataset = open_task(model, data, task, preprocess, limit)
    has_truth = adapter_cls.has_truth(dataset)
    if not has_truth and reference is None and not keep_predictions:
        raise QVisionError(
            f"images have {adapter_cls.truth}; pass --reference FP32.onnx for label-free fidelity",
            data,
        )
    run = runner or Runner(model, inp, threads)
    ref_run = None
    if reference is not None:
        ref_proto, ref_inp = open_model(reference)
        if (ref_inp.channels, ref_inp.height, ref_inp.width) != (
            inp.channels,
            inp.height,
            inp.width,
        ):
            raise QVisionError(
                "reference model takes a different input shape than the model", reference
            )
        ref_run = Runner(reference, ref_inp, threads)
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
    )
    load = LoadReport()
    done = 0
    for batch in iter_batches(dataset, pre, batch_size, strict=strict, report=load):
        ref = ref_run(batch.inputs) if ref_run is not None else None
        adapter.update(run(batch.inputs), batch.samples, ref)
        done += len(batch.samples)
        if progress:
            progress(done + len(load.skipped), len(dataset))
    if done == 0:
        raise QVisionError(f"none of the {len(dataset)} images could be read", data)
    metrics, agreement, fid = adapter.result(ref_run is not None)
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
        env=environment(),
    )


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


def _parse_hw(size: str | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None or isinstance(size, tuple):
        return size
    try:
        h, w = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise QVisionError(f"--size must look like 224x224, got '{size}'") from None
    return h, w


def benchmark(
    models: list[str | Path],
    threads: int | None = None,
    batch: int = 1,
    rounds: int = 10,
    seconds: float = 3.0,
    size: str | tuple[int, int] | None = None,
    memory: bool = True,
    progress: Progress | None = None,
) -> BenchResult:
    """Batch-1 (and batch-N) latency of each model, interleaved round by round."""
    if not models:
        raise QVisionError("give at least one model to benchmark")
    if batch < 1 or rounds < 1:
        raise QVisionError("--batch and --rounds must be at least 1")
    threads = threads or physical_cores()
    paths = [str(m) for m in models]
    hws = {}
    for p in paths:
        hws[p] = _parse_hw(size) or model_hw(load_model(p, normalize=False))
    batches = [1] + ([batch] if batch > 1 else [])
    steps = len(batches) * rounds
    per_batch = []
    for bi, b in enumerate(batches):

        def on_round(r, _n, bi=bi):
            if progress:
                progress(bi * rounds + r, steps)

        per_batch.append(
            time_interleaved(paths, b, hws.get, threads, rounds, seconds, on_round=on_round)
        )
    results = []
    base1 = per_batch[0][0].stats()["median_ms"]
    for i, p in enumerate(paths):
        s1 = per_batch[0][i].stats()
        bn = None
        if len(batches) > 1:
            sn = per_batch[1][i].stats()
            base_n = per_batch[1][0].stats()["median_ms"]
            bn = BatchBench(
                batch=batch,
                **sn,
                throughput_ips=batch * 1000.0 / sn["median_ms"],
                speedup=base_n / sn["median_ms"],
            )
        results.append(
            ModelBench(
                path=p,
                size_bytes=model_size(p),
                **s1,
                throughput_ips=1000.0 / s1["median_ms"],
                speedup=base1 / s1["median_ms"],
                peak_rss_bytes=peak_rss(p, batch, hws[p], threads) if memory else None,
                batch_n=bn,
            )
        )
        energy = energy_per_inference(p, hws[p], threads)
        results[-1].energy_j, results[-1].energy_method = energy.joules, energy.method
        results[-1].energy_uncounted = energy.uncounted
    return BenchResult(
        models=results, threads=threads, batch=batch, rounds=rounds, env=environment()
    )


def energy_per_inference(path, hw, threads=None, providers=None):
    """Joules per batch-1 inference: NVML for GPU providers, RAPL, else the estimate."""
    from qvision.runtime.energy import energy_per_inference as measure

    return measure(path, hw, threads, providers)


def inspect_model(path: str | Path) -> ModelInfo:
    """What a model is: inputs, outputs, ops, size, metadata."""
    model = load_model(path)
    view = GraphView(model)

    def describe(vi: onnx.ValueInfoProto) -> dict:
        dims = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in vi.type.tensor_type.shape.dim
        ]
        return {
            "name": vi.name,
            "type": onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type),
            "shape": dims,
        }

    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    return ModelInfo(
        path=str(path),
        sha256=sha256_file(path),
        size_bytes=model_size(path),
        opset=default_opset(model),
        ir_version=model.ir_version,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        inputs=[describe(i) for i in graph_inputs(model)],
        outputs=[describe(o) for o in model.graph.output],
        op_counts=view.op_counts(),
        parameters=params,
        metadata=metadata(model),
    )


def normalize(path: str | Path, out: str | Path) -> ModelInfo:
    """Write the normalized form (checked, opset >= 13, weights as initializers, shapes inferred)."""
    check_output_path(out, [path])
    model = load_model(path)
    make_session(model.SerializeToString(), threads=1)  # never write a model ORT refuses
    save_model(model, out, inputs=(path,))
    return inspect_model(out)


def export_zoo_model(name: str, out: str | Path) -> ZooExportResult:
    from qvision.zoo.registry import export_model, get_entry

    entry = get_entry(name)
    check_output_path(out, [])
    path = export_model(name, out)
    return ZooExportResult(
        name=name,
        path=str(path),
        sha256=sha256_file(path),
        size_bytes=model_size(path),
        task=entry.task,
        preprocess=entry.preprocess.model_dump(),
    )


def dataset_manifest(root: str | Path) -> DatasetManifest:
    return build_manifest(open_dataset(root))


def quantize(
    model: str | Path,
    output: str | Path,
    calib: str | Path | None = None,
    preprocess: str | dict | Preprocess | None = None,
    target: str = "auto",
    method: str | None = None,
    weights: str = "int8",
    plan: str | Path | None = None,
    plan_out: str | Path | None = None,
    keep_float: tuple[str, ...] = (),
    algos: str | list[str] | None = None,
    batch_size: int = 1,
    threads: int | None = None,
    strict: bool = False,
    limit: int | None = None,
    progress: Progress | None = None,
    layer_bits: dict[str, int] | None = None,
    algo_options: dict[str, dict] | None = None,
    max_drop: float | None = None,
    tune_data: str | Path | None = None,
    task: str = "classification",
    tune_time: float = 1800.0,
    tune_images: int | None = None,
):
    """Post-training quantization to a QDQ ONNX model for ``target`` ('auto' picks from the CPU).

    With ``max_drop`` (points) and labelled ``tune_data``, autotune searches the fastest
    configuration within that metric drop (see qvision.autotune); the result's ``tuning``
    lists every trial.
    """
    from qvision import ptq

    proto, inp = open_model(model)
    pre = resolve_preprocess(proto, preprocess, inp, model)
    config = QuantConfig(
        target=target,
        method=method,
        weights=weights,
        algos=algos,
        keep_float=tuple(keep_float),
        layer_bits=dict(layer_bits or {}),
        algo_options=dict(algo_options or {}),
        batch_size=batch_size,
        limit=limit,
        strict=strict,
    )
    if max_drop is not None:
        from qvision import autotune

        if tune_data is None:
            raise QVisionError(
                "--max-drop needs --eval DIR (labelled images to measure the drop on)"
            )
        if plan is not None:
            raise QVisionError("--max-drop searches plans itself; it cannot start from --plan")
        if calib is None:
            raise QVisionError("--calib DIR is needed")
        return autotune.tune(
            model,
            output,
            calib,
            tune_data,
            pre,
            config,
            max_drop,
            task=task,
            time_limit=tune_time,
            images=tune_images,
            plan_out=plan_out,
            threads=threads,
            progress=progress,
            environment=environment(),
            proto=proto,
        )
    return ptq.run(
        model,
        output,
        calib,
        pre,
        config,
        plan_in=plan,
        plan_out=plan_out,
        threads=threads,
        progress=progress,
        environment=environment(),
        proto=proto,
    )


def analyze(
    model: str | Path,
    calib: str | Path,
    images: str | Path | None = None,
    preprocess: str | dict | Preprocess | None = None,
    target: str = "auto",
    method: str | None = None,
    algos: str | list[str] | None = None,
    limit: int = 32,
    threads: int | None = None,
    sensitivity: bool = True,
    progress: Progress | None = None,
):
    """Per-layer error of the plan for ``model`` and a ranking of the most sensitive layers."""
    from qvision.analysis import analyze as run_analysis

    proto, inp = open_model(model)
    pre = resolve_preprocess(proto, preprocess, inp, model)
    return run_analysis(
        model,
        calib,
        pre,
        images,
        QuantConfig(target=target, method=method, algos=algos),
        limit,
        threads,
        sensitivity,
        progress,
        environment(),
        proto,
    )


def check_data(folder: str | Path, against: str | Path | None = None):
    """Data checks of ``folder`` (and leakage into ``against``): a DataCheck record."""
    from qvision.data import open_dataset
    from qvision.data.checks import check_dataset

    return check_dataset(
        open_dataset(folder), open_dataset(against) if against is not None else None
    )


def leakage_warning(calib: str | Path, eval_dir: str | Path) -> list[str]:
    """A warning when calibration images also appear (byte-identical) in the evaluation set."""
    from qvision.data import open_dataset
    from qvision.data.checks import overlap

    n = overlap(open_dataset(calib), open_dataset(eval_dir))
    if not n:
        return []
    return [
        f"{n} calibration image(s) also in the evaluation set {eval_dir}: the measured accuracy "
        "is optimistic (qvision check-data CALIB --against EVAL lists them)"
    ]


def robustness(
    fp32: str | Path,
    int8: str | Path,
    data: str | Path,
    task: str = "classification",
    preprocess: str | dict | Preprocess | None = None,
    corruptions: list[str] | None = None,
    severities: tuple[int, ...] = (1, 2, 3),
    limit: int | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
    adversarial_images: int = 0,
):
    """FP32 vs INT8 task metric under each corruption and severity, and (classification,
    ``adversarial_images`` > 0) FGSM/PGD success rates (RobustnessResult)."""
    from qvision.robustness import run_corruptions

    return run_corruptions(
        fp32,
        int8,
        data,
        task,
        preprocess,
        corruptions,
        severities,
        limit,
        threads,
        progress,
        adversarial_images,
    )
