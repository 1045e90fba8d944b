"""4-bit activations (--acts 4): 4-bit tensors the first and last layers' inputs excepted,
a model ONNX Runtime loads (Conv inputs and outputs of opposite 4-bit signedness, so it
does not fuse them into a QLinearConv it has no kernel for), and bad values refused."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from qvision.data import image_folder, iter_batches
from qvision.quant.writer import write_qdq

from qdq_models import PRE16, mobilenet_like, plan_context

FOUR = {onnx.TensorProto.UINT4: "uint4", onnx.TensorProto.INT4: "int4"}


def _q_types(model) -> dict[str, str]:
    """Activation tensor -> the type its QuantizeLinear writes."""
    zps = {t.name: t.data_type for t in model.graph.initializer}
    return {
        n.input[0]: FOUR.get(zps[n.input[2]], "8-bit")
        for n in model.graph.node
        if n.op_type == "QuantizeLinear"
    }


def test_four_bit_grids_load_and_run_as_planned(flat_dir):
    model = mobilenet_like()
    ctx = plan_context(model, flat_dir, weight_bits=4, act_bits=4)
    plan = ctx.plan
    low = {t for t, s in plan.activations.items() if s.bits == 4}
    # the image and the classifier's features keep 8 bits; the rest are 4-bit grids
    assert "input" not in low and "fl" not in low and {"r1", "r2", "r3", "c4"} <= low, low
    assert any("4-bit activations" in w for w in plan.warnings), plan.warnings
    written = write_qdq(model, plan)
    types = _q_types(written)
    by_out = {n.output[0]: n for n in written.graph.node}
    for node in written.graph.node:  # no Conv between two 4-bit tensors of one type
        if node.op_type != "Conv":
            continue
        src = by_out[node.input[0]].input[0]  # DQ <- Q <- tensor
        q_in = by_out[src].input[0] if src in by_out else None
        ins = types.get(q_in) if q_in else None
        outs = [types.get(t) for t in types if t.startswith(node.output[0])]
        assert not (ins in FOUR.values() and ins in outs), (node.name, ins, outs)
    x = next(iter_batches(image_folder(flat_dir), PRE16, batch_size=4)).inputs
    sess = ort.InferenceSession(written.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})[0]
    # the grid holds: a 4-bit tensor takes at most 16 values
    probe = onnx.ModelProto()
    probe.CopyFrom(written)
    dq = next(
        n
        for n in written.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0].startswith("r2")
    )
    probe.graph.output.append(
        onnx.helper.make_tensor_value_info(dq.output[0], onnx.TensorProto.FLOAT, None)
    )
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    out, r2 = sess.run(None, {"input": x})
    assert np.array_equal(out, got) and len(np.unique(r2)) <= 16, np.unique(r2).size
    scale = float(
        numpy_helper.to_array(next(t for t in written.graph.initializer if t.name == dq.input[1]))
    )
    assert np.allclose(r2 / scale, np.round(r2 / scale), atol=1e-3)


def test_acts_option_on_the_command_line(tmp_path, tiny_model, flat_dir):
    from conftest import run_cli

    out, res = tmp_path / "q.onnx", tmp_path / "r.json"
    r = run_cli("quantize", tiny_model, "-o", out, "--calib", flat_dir, "--acts", "4",
                "--weights", "int4", "--algo", "bias-correction", "--json", res)  # fmt: skip
    assert r.returncode == 0, r.stderr
    record = json.loads(res.read_text())
    assert record["acts"] == 4 and record["method"] == "mse", record
    assert "4-bit" in " ".join(record["warnings"])
    bad = run_cli("quantize", tiny_model, "-o", tmp_path / "b.onnx", "--calib", flat_dir,
                  "--acts", "5")  # fmt: skip
    assert bad.returncode == 2 and "--acts 5" in bad.stderr, bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "b.onnx").exists()


@pytest.mark.parametrize("dtype", ["uint4", "int8"])
def test_a_plan_with_odd_activation_grids_is_refused(tmp_path, flat_dir, dtype):
    from qvision.quant.validate import problems_of

    model = mobilenet_like()
    plan = plan_context(model, flat_dir, weight_bits=8).plan
    t = next(iter(plan.activations))
    bits = 4 if dtype == "uint4" else 5
    zp = [min(z, 15) for z in plan.activations[t].zero_point]
    plan.activations[t] = plan.activations[t].model_copy(
        update={"dtype": dtype, "bits": bits, "zero_point": zp}
    )
    problems = problems_of(plan, model)
    assert bool(problems) == (dtype != "uint4"), problems
