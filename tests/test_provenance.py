"""Provenance: the manifest beside a quantized model names exactly what went in and out."""

import hashlib
import json

from qvision import api
from qvision.data import build_manifest, image_folder
from qvision.quant.plan import QuantPlan


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_records_inputs_outputs_and_run(tmp_path, tiny_model, flat_dir):
    out, plan = tmp_path / "q.onnx", tmp_path / "plan.json"
    res = api.quantize(tiny_model, out, flat_dir, plan_out=plan)
    path = tmp_path / "q.manifest.json"
    assert res.manifest == str(path)
    m = json.loads(path.read_text())
    assert m["input_model"]["sha256"] == _sha(tiny_model)  # as sha256sum gives it
    assert m["output_model"]["sha256"] == _sha(out) == res.output_sha256
    assert m["plan"]["sha256"] == _sha(plan)
    assert m["calibration"] == {
        "root": str(flat_dir),
        "images": 4,
        "sha256": build_manifest(image_folder(flat_dir)).sha256,
    }
    assert {"qvision", "onnx", "onnxruntime", "numpy"} <= set(m["versions"])
    assert m["target"] == res.target and m["config"]["weights"] == "int8"
    assert m["started"] <= m["finished"] and m["command"]
    # a rerun from the plan records the plan it read and no calibration set
    again = api.quantize(tiny_model, tmp_path / "r.onnx", plan=plan)
    m2 = json.loads((tmp_path / "r.manifest.json").read_text())
    assert again.manifest and m2["plan_in"]["sha256"] == _sha(plan) and m2["calibration"] is None
    assert QuantPlan.load(plan).model_sha256 == m2["input_model"]["sha256"]


def test_a_replayed_plan_keeps_its_target(tmp_path, tiny_model, flat_dir):
    """A plan's grids belong to the target it was made for: replayed with --target auto on
    any machine, model metadata and manifest both name that target; an explicit other
    target is refused before anything is written."""
    import onnx
    import pytest

    from qvision.errors import QVisionError
    from qvision.targets import QUANT_METADATA_KEY

    plan = tmp_path / "plan.json"
    api.quantize(tiny_model, tmp_path / "a.onnx", flat_dir, target="ort-cpu-avx2", plan_out=plan)
    res = api.quantize(tiny_model, tmp_path / "r.onnx", plan=plan)  # auto
    m = json.loads((tmp_path / "r.manifest.json").read_text())
    meta = {p.key: p.value for p in onnx.load(tmp_path / "r.onnx").metadata_props}
    assert res.target == m["target"] == m["plan_target"] == "ort-cpu-avx2"
    assert json.loads(meta[QUANT_METADATA_KEY])["target"] == "ort-cpu-avx2"
    assert res.target_reason.startswith(("ort-cpu-avx2, from the plan", "auto → ort-cpu-avx2"))
    with pytest.raises(QVisionError, match="plan was made for target ort-cpu-avx2"):
        api.quantize(tiny_model, tmp_path / "x.onnx", plan=plan, target="tensorrt")
    assert not (tmp_path / "x.onnx").exists()
