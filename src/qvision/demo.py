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
from contextlib import nullcontext
from pathlib import Path

from qvision import api
from qvision.evidence import prove
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
    """The quantize → evaluate → benchmark → report workflow of ``qvision quantize --eval
    --report`` on the zoo model and the bundled photos. The photos are unlabelled, so the
    page shows fidelity, not accuracy or robustness; calibrating and evaluating on the same
    photos is flagged."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / f"{DEMO_MODEL}.onnx"
    exported = api.export_zoo_model(DEMO_MODEL, model_path)
    photos = prepare_photos(out / "photos")

    def phases(name: str):
        return nullcontext(progress if name == "evaluating" else None)

    done = prove(
        model_path,
        out / f"{DEMO_MODEL}.int8.onnx",
        photos,
        plan_out=out / "plan.json",
        eval_dir=photos,
        report=out / "report",
        keep_predictions=True,
        bench_seconds=seconds,
        phases=phases,
    )
    result = DemoResult(
        model=exported,
        quantize=done.quantize,
        eval=done.fp32,
        int8_eval=done.int8,
        bench=done.bench,
    )
    write_json(result, out / "results.json")
    return result, done.report
