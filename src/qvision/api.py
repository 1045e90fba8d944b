"""The public API. The CLI is a thin layer over these functions; each returns a record
from qvision.records (the JSON the CLI's --json writes)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx

from qvision.cluster import Executor, LocalExecutor, using
from qvision.data import (
    Preprocess,
    build_manifest,
    open_dataset,
)
from qvision.data.manifest import DatasetManifest
from qvision.errors import QVisionError
from qvision.eval.evaluate import Progress, environment, metadata, open_model, resolve_preprocess
from qvision.eval.evaluate import Runner as Runner  # public: bench scripts score with it
from qvision.eval.evaluate import evaluate as evaluate
from qvision.eval.evaluate import open_task as open_task
from qvision.fileio import check_output_path, sha256_file
from qvision.model import GraphView, load_model, save_model
from qvision.model.load import default_opset, graph_inputs, model_size
from qvision.quant.config import QuantConfig, TuneOptions
from qvision.records import (
    BatchBench,
    BenchResult,
    ModelBench,
    ModelInfo,
    QuantizeResult,
    ZooExportResult,
)
from qvision.runtime.bench import peak_rss, time_interleaved
from qvision.runtime.inputs import model_hw
from qvision.runtime.machine import physical_cores
from qvision.runtime.session import make_session


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


def normalize(path: str | Path, out: str | Path, alphabet: str | Path | None = None) -> ModelInfo:
    """Write the normalized form (checked, opset >= 13, weights as initializers, shapes
    inferred); ``alphabet``, an OCR recognizer's dictionary file, goes into its
    ``character`` metadata, where every later command reads it."""
    check_output_path(out, [path, alphabet])
    model = load_model(path)
    if alphabet is not None:
        from qvision.eval.tasks.ocr import METADATA_KEY as OCR_KEY
        from qvision.eval.tasks.ocr import read_alphabet

        text = read_alphabet(alphabet)
        kept = [p for p in model.metadata_props if p.key != OCR_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        model.metadata_props.add(key=OCR_KEY, value=text)
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


def qat_config(
    config: QuantConfig | None = None,
    steps: int | None = None,
    seed: int = 0,
    device: str | None = None,
    labels: bool = False,
) -> QuantConfig:
    """``config`` with the ``qat`` algorithm after its pipeline (the target's by default)."""
    config = config or QuantConfig()
    options = dict(config.algo_options)
    options["qat"] = {
        **options.get("qat", {}),
        "seed": seed,
        **({"steps": steps} if steps is not None else {}),
        **({"device": device} if device else {}),
        **({"labels": True} if labels else {}),
    }
    algos = config.algos if config.algos is not None else "default"
    algos = algos if isinstance(algos, str) else ",".join(algos)
    return config.updated(algos=f"{algos},qat", algo_options=options)


def qat(
    model: str | Path,
    output: str | Path,
    calib: str | Path,
    config: QuantConfig | None = None,
    *,
    steps: int | None = None,
    seed: int = 0,
    device: str | None = None,
    labels: bool = False,
    **kwargs,
):
    """Quantization-aware training: the target's PTQ pipeline, then weights, steps and
    biases trained end to end against the FP32 model on the calibration images (the
    ``qat`` algorithm), written by the same writer. ``kwargs`` as for ``quantize``."""
    config = qat_config(config, steps, seed, device, labels)
    return quantize(model, output, calib, config, **kwargs)


def dataset_manifest(root: str | Path) -> DatasetManifest:
    return build_manifest(open_dataset(root))


def quantize(
    model: str | Path,
    output: str | Path,
    calib: str | Path | None = None,
    config: QuantConfig | None = None,
    *,
    preprocess: str | dict | Preprocess | None = None,
    plan: str | Path | None = None,
    plan_out: str | Path | None = None,
    tune: TuneOptions | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
    executor: str | Executor = "local",
    cpus_per_task: int = 1,
    **settings,
):
    """Post-training quantization to a QDQ ONNX model for the config's target ('auto' picks
    from the CPU). ``config`` holds the quantization settings; any of its fields may also
    be given as a keyword (``algos="cle,bias-correction"``, ``weights="int4"``).

    With ``tune`` (a metric budget and the images to measure it on), autotune searches the
    fastest configuration within that drop (see qvision.quant.autotune); the result's
    ``tuning`` lists every trial. ``executor`` (``ray``, or an Executor) scores that many
    trials at once on a cluster; the chosen configuration is the one trial by trial finds.
    """
    from qvision.quant import pipeline

    if tune is None and executor != "local" and not isinstance(executor, LocalExecutor):
        raise QVisionError("--executor runs --max-drop's trials; without --max-drop use local")
    config = (config or QuantConfig()).updated(**settings)
    proto, inp = open_model(model)
    pre = resolve_preprocess(proto, preprocess, inp, model)
    if tune is not None:
        from qvision.quant import autotune

        if tune.data is None:
            raise QVisionError(
                "--max-drop needs --eval DIR (labelled images to measure the drop on)"
            )
        if plan is not None:
            raise QVisionError("--max-drop searches plans itself; it cannot start from --plan")
        if calib is None:
            raise QVisionError("--calib DIR is needed")
        with using(executor, threads, cpus_per_task) as ex:
            return autotune.tune(
                model,
                output,
                calib,
                tune.data,
                pre,
                config,
                tune.max_drop,
                task=tune.task,
                time_limit=tune.time_limit,
                images=tune.images,
                plan_out=plan_out,
                threads=threads,
                progress=progress,
                environment=environment(),
                proto=proto,
                executor=ex,
            )
    return pipeline.run(
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
    config: QuantConfig | None = None,
    *,
    preprocess: str | dict | Preprocess | None = None,
    limit: int = 32,
    threads: int | None = None,
    sensitivity: bool = True,
    progress: Progress | None = None,
    quantized: QuantizeResult | None = None,
    top: int | None = None,
    **settings,
):
    """Per-layer error of the plan for ``model`` and a ranking of the most sensitive layers.
    ``config`` (or its fields as keywords) says how the plan is made, as for ``quantize``;
    ``quantized`` (this process's quantize result) analyses the plan it wrote instead;
    ``top`` limits the sensitivity runs to the layers adding the most error."""
    from qvision.quant.analysis import analyze as run_analysis

    config = (config or QuantConfig()).updated(**settings)
    proto, inp = open_model(model)
    pre = resolve_preprocess(proto, preprocess, inp, model)
    return run_analysis(
        model,
        calib,
        pre,
        images,
        config,
        limit,
        threads,
        sensitivity,
        progress,
        environment(),
        proto,
        planned=quantized._planned if quantized is not None else None,
        top=top,
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
    executor: str | Executor = "local",
    cpus_per_task: int = 1,
):
    """FP32 vs INT8 task metric under each corruption and severity, and (classification,
    ``adversarial_images`` > 0) FGSM/PGD success rates (RobustnessResult). ``executor``:
    ``local`` (this process) or ``ray`` (each setting a Ray task of ``cpus_per_task`` CPUs
    on the cluster ``RAY_ADDRESS`` names, else a new one here), or an Executor."""
    from qvision.eval.robustness import run_corruptions

    with using(executor, threads, cpus_per_task) as ex:
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
            executor=ex,
        )


def sweep(
    config: str | Path,
    out: str | Path | None = None,
    *,
    executor: str | Executor = "local",
    cpus_per_task: int = 1,
    threads: int | None = None,
    progress: Progress | None = None,
):
    """Models × targets × algorithm pipelines × weights from a YAML ``config``, each
    quantized and scored against its float model (SweepResult; ``qvision.sweep``); the
    models, ``sweep.json`` and ``sweep.html`` land in ``out``."""
    from qvision.sweep import sweep as run_sweep

    with using(executor, threads, cpus_per_task) as ex:
        return run_sweep(config, out, ex, progress)


def monitor(
    int8: str | Path,
    reference: str | Path,
    images: str | Path,
    calib: str | Path | None = None,
    *,
    sample: float = 0.25,
    thresholds=None,
    task: str | None = None,
    decoder: dict | None = None,
    metrics: str | None = None,
    html: str | Path | None = None,
    follow: bool = False,
    poll: float = 1.0,
    idle_stop: float | None = None,
    preprocess: str | dict | Preprocess | None = None,
    threads: int | None = None,
    batch: int = 8,
    on_alert=None,
):
    """Shadow ``int8`` against its float ``reference`` on the images of a folder, as a
    deployment would see them (qvision.monitor.Monitor); a MonitorResult.

    The baseline (the calibration images' input statistics and clipped shares) comes from
    the manifest ``quantize`` wrote beside ``int8``, or is measured on ``calib`` when given.
    ``follow`` keeps reading images as they arrive (polling every ``poll`` s) until
    interrupted or ``idle_stop`` s pass without one. ``metrics`` (HOST:PORT) serves the
    counters to Prometheus while it runs; ``html`` writes a page of the window (rewritten
    as it runs when following); ``on_alert`` sees each alert as it fires."""
    import time

    from qvision.data import image_folder, iter_batches
    from qvision.data.datasets import Dataset, LoadReport, Sample, _existing_dir
    from qvision.monitor import Monitor
    from qvision.monitor.follow import follow as follow_folder
    from qvision.monitor.metrics import Metrics, parse_address

    if metrics is not None:
        parse_address(metrics)  # before any work
    if html is not None:
        check_output_path(html, [int8, reference, images, calib])
    t0 = time.perf_counter()
    proto, inp = open_model(reference)
    pre = resolve_preprocess(proto, preprocess, inp, reference)
    root = _existing_dir(images)
    base = None
    if calib is not None:
        ref = [b.inputs for b in iter_batches(image_folder(calib), pre, batch)]
        if not ref:
            raise QVisionError("no readable calibration images", calib)
        base = np.concatenate(ref)
    mon = Monitor(int8, reference, base, task=task, decoder=decoder, sample=sample,
                  thresholds=thresholds, threads=threads)  # fmt: skip
    served = Metrics(metrics) if metrics is not None else None
    unread = LoadReport()
    chunks = (
        follow_folder(root, poll, idle_stop)
        if follow
        else iter([[s.path for s in image_folder(root).samples]])
    )
    page_at = time.monotonic()
    try:
        for files in chunks:
            data = Dataset(root, [Sample(f) for f in files])
            for b in iter_batches(data, pre, inp.batch or batch, report=unread):
                new = mon.observe(b.inputs)
                if served is not None:
                    served.update(mon, new)
                for a in new if on_alert else []:
                    on_alert(a)
            if html is not None and follow and time.monotonic() - page_at > 10:
                _monitor_page(mon, int8, reference, html, t0, unread, refresh=10)
                page_at = time.monotonic()
    except KeyboardInterrupt:  # the way a followed stream ends: keep what was seen
        pass
    finally:
        if served is not None:
            served.close()
    res = _monitor_result(mon, int8, reference, t0, unread)
    if html is not None:
        _monitor_page(mon, int8, reference, html, t0, unread)
    return res


def _monitor_result(mon, int8, reference, t0: float, unread):
    import time

    from qvision.records import MonitorAlert, MonitorResult, SkippedFile

    state = mon.state()
    sat = {t: float(v) for t, v in zip(mon.tensors, state["saturation"], strict=True)}
    top = dict(sorted(sat.items(), key=lambda kv: -kv[1])[:5])
    return MonitorResult(
        model=str(int8),
        reference=str(reference),
        task=mon.task,
        images=mon.seen,
        sampled=mon.sampled,
        agreement_metric=state["agreement_label"],
        agreement=state["agreement"],
        agreement_ci95=state["agreement_ci95"],
        saturation=top,
        saturation_baseline={t: float(mon.baseline[mon.tensors.index(t)]) for t in top},
        drift=mon.drift_p,
        latency_ms=state["latency_ms"],
        thresholds=dataclasses.asdict(mon.t),
        alerts=[
            MonitorAlert(kind=a.kind, message=a.message, at_image=a.at_image) for a in mon.alerts
        ],
        skipped=[SkippedFile(path=p, reason=r) for p, r in unread.skipped[:100]],
        history=mon.history.points,
        seconds=time.perf_counter() - t0,
    )


def _monitor_page(mon, int8, reference, html, t0: float, unread, refresh=None) -> None:
    from qvision.report.monitor_page import write_page

    write_page(_monitor_result(mon, int8, reference, t0, unread), html, refresh)
