"""The channel guard: a depthwise layer whose one input grid crushes many live channels
stays float with its producer; a block with balanced channels is left alone."""

import numpy as np
from onnx import helper

from qvision import api
from qvision.quant.plan import QuantPlan

from qdq_models import graph_model, mobile_block


def lopsided(seed: int = 0):
    """Conv whose channels differ 10^4 in scale, HardSwish, depthwise Conv, pointwise Conv."""
    r = np.random.default_rng(seed)
    f = np.float32
    gain = np.array([1e-3] * 4 + [10.0] * 4, f)[:, None, None, None]
    inits = {
        "w1": (r.standard_normal((8, 3, 3, 3)) * gain).astype(f),
        "w2": (r.standard_normal((8, 1, 3, 3)) * 0.5 / gain).astype(f),
        "w3": (r.standard_normal((8, 8, 1, 1)) * 0.3).astype(f),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("HardSwish", ["c1"], ["h1"], name="hswish"),
        helper.make_node("Conv", ["h1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=8, name="dw"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu"),
        helper.make_node("Conv", ["r2", "w3"], ["out"], name="pw"),
    ]
    return graph_model(nodes, inits, ["N", 8, 16, 16])


def _plan(tmp_path, model, flat_dir, name):
    import onnx

    src = tmp_path / f"{name}.onnx"
    onnx.save(model, str(src))
    res = api.quantize(
        src, tmp_path / f"{name}.q.onnx", flat_dir, plan_out=tmp_path / f"{name}.json"
    )
    return QuantPlan.load(tmp_path / f"{name}.json"), res


def test_crushed_depthwise_input_keeps_the_layer_and_its_producer_float(tmp_path, flat_dir):
    plan, res = _plan(tmp_path, lopsided(), flat_dir, "lop")
    assert plan.nodes["dw"].action == plan.nodes["conv1"].action == "float"
    assert "50% of its input channels" in plan.nodes["dw"].reason
    assert plan.nodes["conv1"].reason.startswith("feeds dw")
    assert plan.nodes["pw"].action == "quantize"
    assert any(w.startswith("channel guard: kept 2 layers") for w in res.warnings)
    block, _ = _plan(tmp_path, mobile_block(), flat_dir, "block")
    assert block.nodes["dw"].action == "quantize"
