"""The engine's shared parts: the simulator measures a plan the way ONNX Runtime runs the
written model; the planner returns new data."""

import numpy as np
import onnxruntime as ort

from qvision.data import image_folder, iter_batches
from qvision.model.rewrite import prepare_for_quantization
from qvision.quant.plan import NodePlan
from qvision.quant.sim import Simulator
from qvision.quant.writer import write_qdq

from qdq_models import PRE16, mobile_block, plan_context


def _batches(flat_dir):
    return [b.inputs for b in iter_batches(image_folder(flat_dir), PRE16, batch_size=2)]


def test_reference_and_output_error_match_a_direct_run(flat_dir):
    model = prepare_for_quantization(mobile_block())
    ctx = plan_context(model, flat_dir, weight_bits=4)
    sim = Simulator(model, "input")
    batches = _batches(flat_dir)
    ref = sim.reference(batches)
    assert len(ref.batches) == len(batches) and all(o[0].dtype == np.float32 for o in ref.outputs)
    # the written model in ONNX Runtime, as written: the noise is the simulator's
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(write_qdq(model, ctx.plan).SerializeToString(), opts)
    noise = sum(
        float(((sess.run(None, {"input": x})[0] - r[0]) ** 2).sum())
        for x, r in zip(batches, ref.outputs, strict=True)
    )
    (err,) = sim.output_errors(ctx.plan, ref)
    assert noise > 0 and np.isclose(err.noise, noise, rtol=1e-5)
    assert sim.relative_error(ctx.plan, ref) == err.noise / err.signal
    # every layer kept float: the QDQ model is the float model
    floats = ctx.plan.model_copy(deep=True)
    for name, d in floats.nodes.items():
        floats.nodes[name] = NodePlan(op_type=d.op_type, action="float", reason="test")
    floats.activations.clear()
    assert sim.output_errors(floats, ref)[0].noise < 1e-9
    # a byte budget keeps fewer batches
    assert len(sim.reference(batches, max_bytes=1).batches) == 1


def test_probe_exposes_inner_tensors_before_their_quantizer(flat_dir):
    model = prepare_for_quantization(mobile_block())
    ctx = plan_context(model, flat_dir, weight_bits=8)
    sim = Simulator(model, "input")
    x = _batches(flat_dir)[0]
    inner = next(t for t in ctx.plan.activations if t != "input")
    got, want = sim.probe(ctx.plan, [inner])(x), sim.float_probe([inner])(x)
    assert set(got) >= {"input", inner} and np.array_equal(got["input"], x)
    # the tensor in front of its QuantizeLinear: close to the float one, not equal
    assert got[inner].shape == want[inner].shape
    assert 0 < np.abs(got[inner] - want[inner]).max() < 0.5 * np.abs(want[inner]).max()


def test_build_plan_leaves_its_inputs_alone(flat_dir):
    """The planner returns new data: demoting a consumer, or a Concat of mixed ranges, edits
    the plan's decisions, never the caller's."""
    from qvision.quant.planner import activation_tensors, build_plan, decide_nodes
    from qvision.targets import TARGETS

    model = prepare_for_quantization(mobile_block())
    target = TARGETS["ort-cpu-vnni"]
    decisions = decide_nodes(model, target, set())
    tensors = activation_tensors(model, decisions)
    ranges = {t: (-1.0, 1.0) for t in tensors[1:]}  # the first has none: its consumer demotes
    given = {k: v.model_dump() for k, v in decisions.items()}
    plan = build_plan(model, ranges, target, "minmax", "x", decisions)
    assert {k: v.model_dump() for k, v in decisions.items()} == given
    assert ranges == {t: (-1.0, 1.0) for t in tensors[1:]}
    # the consumer of the tensor without a range is float in the plan itself (it used to be
    # demoted in the caller's mapping only, while the plan still quantized it)
    assert plan.nodes["conv1"].action == "float" and decisions["conv1"].action == "quantize"
    assert "input" not in plan.activations
    assert plan.nodes.keys() == decisions.keys()
