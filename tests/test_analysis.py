import numpy as np
import onnx
from onnx import numpy_helper

from qvision import api

from qdq_models import mobile_block


def test_analysis_finds_the_damaged_layer(tmp_path, flat_dir):
    model = mobile_block()
    for t in model.graph.initializer:
        if t.name == "w3":  # one huge weight makes channel 0 of 'pw' coarse on a 7/8-bit grid
            w = numpy_helper.to_array(t).copy()
            w[:, 0] = 0.0
            w[0, 0] = 40.0
            w[1:, 1] *= 30.0
            t.CopyFrom(numpy_helper.from_array(w, "w3"))
    src = tmp_path / "m.onnx"
    onnx.save(model, str(src))
    # the damage is sized for 7-bit weights: pinned, so a VNNI machine (8-bit) tests the same
    res = api.analyze(src, flat_dir, limit=4, algos="none", method="mse", target="ort-cpu-avx2")
    assert {r.node for r in res.layers} >= {"conv1", "dw", "pw", "add", "relu1", "clip"}
    assert res.output_sqnr_db is not None and np.isfinite(res.output_sqnr_db)
    assert res.ranking and all(
        r.keep_float_output_sqnr_db is not None for r in res.layers if r.node in res.ranking
    )
    by = {r.node: r for r in res.layers}
    # the damaged layer loses far more SQNR than any other, and keeping it float helps
    assert by["pw"].sqnr_db < by["clip"].sqnr_db - 5 and by["dw"].sqnr_db > by["clip"].sqnr_db - 1
    assert "pw" in res.ranking[:2] and by["pw"].gain_db > 0.5
    # readable labels beside the node names: position and shape where a name says no more
    # than its op ('add', 'conv1'), the name and shape where it does ('pw')
    assert by["pw"].label == "pw Conv 1×1 8→8" and by["dw"].label == "dw Conv 3×3 depthwise 8"
    assert by["conv1"].label == "Conv #1 3×3 3→8" and by["add"].label == "Add #1"


def test_top_limits_sensitivity_to_the_layers_adding_most_error(tiny_model, flat_dir):
    from qvision import api

    full = api.analyze(tiny_model, flat_dir, limit=4)
    one = api.analyze(tiny_model, flat_dir, limit=4, top=1)
    measured = [r for r in one.layers if r.gain_db is not None]
    assert len(measured) == 1 and len([r for r in full.layers if r.gain_db is not None]) == 2
    assert one.ranking == [measured[0].node]
