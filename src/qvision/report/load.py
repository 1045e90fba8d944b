"""Report inputs from saved JSON results (``qvision report A.json B.json -o DIR``)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from qvision.errors import QVisionError
from qvision.provenance import read_manifest
from qvision.report.html import ReportInputs


def inputs_from_json(paths: list[str | Path], max_drop: float | None = None) -> ReportInputs:
    from qvision import records as schema
    from qvision.data.checks import DataCheck

    r = ReportInputs(max_drop=max_drop)
    for path in paths:
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise QVisionError(f"cannot read results JSON ({exc})", p) from None
        kind = data.get("kind") if isinstance(data, dict) else None
        try:
            if kind == "quantize-eval":
                res = schema.QuantizeEvalResult.model_validate(data)
                r.quantize, r.fp32_eval, r.int8_eval = res.quantize, res.fp32, res.int8
            elif kind == "quantize":
                r.quantize = schema.QuantizeResult.model_validate(data)
            elif kind == "bench":
                r.bench = schema.BenchResult.model_validate(data)
            elif kind == "analyze":
                r.analysis = schema.AnalyzeResult.model_validate(data)
            elif kind == "robustness":
                r.robustness = schema.RobustnessResult.model_validate(data)
            elif kind == "check-data":
                r.data_check = DataCheck.model_validate(data)
            elif kind == "qvision-manifest":
                r.manifest = data
            else:
                raise QVisionError(f"not a qvision result this report knows (kind {kind!r})", p)
        except ValidationError as exc:
            raise QVisionError(f"invalid {kind} result: {exc.errors()[0]['msg']}", p) from None
    if r.manifest is None and r.quantize is not None:
        r.manifest = read_manifest(r.quantize.manifest)
    return r
