"""`qvision demo`: the main job on an embedded default, offline.

Exports the EfficientNet-Lite0 zoo model, quantizes it to INT8 calibrating on real
photos that pip packages ship, compares FP32 and INT8 on those photos (predictions,
agreement, SQNR), benchmarks both interleaved, writes every result as JSON and the
evidence page (report/report.html: fidelity, latency, sensitivity, activation ranges,
data checks, provenance; the photos carry no labels, so no accuracy or robustness).
With ten photos this shows the workflow, not an accuracy figure: see BENCHMARKS.md.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from qvision import api
from qvision.records import DemoResult, write_json
from qvision.zoo.sources import sample_photos

DEMO_MODEL = "efficientnet-lite0"


def prepare_photos(folder: Path) -> Path:
    """Copy the bundled photos into one folder (they live in several packages)."""
    folder.mkdir(parents=True, exist_ok=True)
    for package, src in sample_photos():
        dst = folder / f"{package}-{src.name}"
        if not dst.exists():
            shutil.copyfile(src, dst)
    return folder


def run_demo(
    out_dir: str | Path, progress: api.Progress | None = None, seconds: float = 4.0
) -> tuple[DemoResult, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / f"{DEMO_MODEL}.onnx"
    int8_path = out / f"{DEMO_MODEL}.int8.onnx"
    exported = api.export_zoo_model(DEMO_MODEL, model_path)
    photos = prepare_photos(out / "photos")
    quantized = api.quantize(model_path, int8_path, photos, plan_out=out / "plan.json")
    evaluated = api.evaluate(model_path, photos, keep_predictions=True, progress=progress)
    int8_eval = api.evaluate(
        int8_path, photos, reference=model_path, keep_predictions=True, progress=progress
    )
    bench = api.benchmark([model_path, int8_path], seconds=seconds)
    result = DemoResult(
        model=exported, quantize=quantized, eval=evaluated, int8_eval=int8_eval, bench=bench
    )
    write_json(result, out / "results.json")
    return result, _report(out, model_path, photos, result)


def _report(out: Path, model_path: Path, photos: Path, result: DemoResult) -> Path:
    """The evidence page for the demo run. The photos are unlabelled, so it shows fidelity,
    not accuracy or robustness; calibrating and evaluating on the same photos is flagged."""
    from qvision.report.build import gather
    from qvision.report.html import write_report

    evidence = gather(
        model_path,
        result.quantize,
        result.eval,
        result.int8_eval,
        photos,
        photos,
        "classification",
        bench=result.bench,
    )
    return write_report(evidence, out / "report")
