"""Activation grids chosen for the network's output error, not each tensor's own.

Calibration sets each activation's range from that tensor alone (mean-minmax by default),
but what its rounding and clipping cost depends on the layers after it. This tries each
activation grid's scale at a few multiples (narrower grids clip more and round finer), one
tensor at a time in graph order, and keeps a multiple where the quantized model's outputs on
calibration images come closer to the float model's. Where the plan is for this machine's
own ONNX Runtime profile, trials run the optimized graph, so they measure the deployed
kernels; otherwise the QDQ graph as written (its reference arithmetic: an AVX2 machine's
kernels would saturate a VNNI plan's 8-bit weights). Tied tensors (same-scale
ops, Concat) move together; a grid after a folded Clip stays under the clip's max, so the
fold stays exact.
"""

from __future__ import annotations

import time

import numpy as np

from qvision.algorithms.context import Context
from qvision.data import iter_batches
from qvision.errors import QVisionError
from qvision.model.graph import GraphView
from qvision.plan import QuantSpec
from qvision.planner import clip_caps, fit_under, scale_groups
from qvision.runtime.session import make_session
from qvision.targets import detect
from qvision.writer import write_qdq

MULTIPLES = (0.8, 0.9, 1.1)
IMAGES = 64
SWEEPS = 1


def _inputs(ctx: Context, images: int) -> list[np.ndarray]:
    """The first ``images`` calibration images, batched by 8 unless the model fixes the batch."""
    dim = ctx.model.graph.input[0].type.tensor_type.shape.dim
    batch = 1 if dim and dim[0].HasField("dim_value") else 8
    xs = []
    for b in iter_batches(ctx.dataset, ctx.preprocess, batch_size=1):
        xs.append(b.inputs)
        if len(xs) >= images:
            break
    if not xs:
        raise QVisionError("act-search needs calibration images")
    x = np.concatenate(xs)
    return [x[i : i + batch] for i in range(0, len(x), batch)]


def _outputs(
    model_bytes: bytes, name: str, batches: list[np.ndarray], threads, optimize: bool = True
) -> list:
    sess = make_session(model_bytes, threads, optimize=optimize)
    runs = [sess.run(None, {name: x}) for x in batches]
    return [np.concatenate([r[k] for r in runs]).astype(np.float64) for k in range(len(runs[0]))]


def _error(got: list[np.ndarray], ref: list[np.ndarray]) -> float:
    """Squared error of each output relative to the float output's power, summed over outputs."""
    return float(
        sum(
            ((g - r) ** 2).mean() / max((r**2).mean(), 1e-30) for g, r in zip(got, ref, strict=True)
        )
    )


def apply(ctx: Context) -> Context:
    """``ctx.options['act-search']`` may set images (64) and sweeps (1)."""
    t0 = time.perf_counter()
    opts = ctx.options.get("act-search", {})
    unknown = set(opts) - {"images", "sweeps"}
    if unknown:
        raise QVisionError(f"unknown act-search option '{sorted(unknown)[0]}' (images, sweeps)")
    try:
        images, sweeps = int(opts.get("images", IMAGES)), int(opts.get("sweeps", SWEEPS))
    except ValueError:
        raise QVisionError("act-search options images and sweeps take integers") from None
    if images < 1 or sweeps < 0:
        raise QVisionError(f"act-search needs images >= 1 and sweeps >= 0, not {images}, {sweeps}")
    plan, view = ctx.plan, GraphView(ctx.model)
    batches = _inputs(ctx, images)
    ref = _outputs(ctx.model.SerializeToString(), ctx.input_name, batches, ctx.threads)
    deployed = ctx.target.name == detect()[0].name

    def error() -> float:
        q = write_qdq(ctx.model, plan).SerializeToString()
        return _error(_outputs(q, ctx.input_name, batches, ctx.threads, deployed), ref)

    groups = scale_groups(ctx.model, plan.nodes)
    caps = clip_caps(ctx.model, plan.nodes, view)
    order = [ctx.input_name] + [o for n in view.topological_order() for o in n.output]
    members: dict[str, list[str]] = {}
    for t in order:
        if t in plan.activations:
            members.setdefault(groups.find(t), []).append(t)
    first = {r: plan.activations[ts[0]].scale[0] for r, ts in members.items()}
    start = best = error()
    trials = 1
    for _ in range(sweeps):
        for tensors in members.values():
            spec = plan.activations[tensors[0]]
            scale, zp = spec.arrays()
            cap = min((caps[t] for t in tensors if t in caps), default=np.inf)
            pick = None
            for m in MULTIPLES:  # each from the grid this sweep started with
                s = np.float32(scale * m)
                if np.isfinite(cap):
                    s = fit_under(s, zp, spec.format, cap)
                if s == scale:  # at the clip's max already: wider is not allowed
                    continue
                trial = QuantSpec.from_arrays(spec.format, s, zp)
                for t in tensors:
                    plan.activations[t] = trial
                err = error()
                trials += 1
                if err < best:
                    best, pick = err, trial
            for t in tensors:
                plan.activations[t] = pick or spec
    moved = {r: plan.activations[ts[0]].scale[0] / first[r] for r, ts in members.items()}
    moved = {r: m for r, m in moved.items() if m != 1.0}
    narrower = sum(1 for m in moved.values() if m < 1)
    ctx.log.append(
        f"act-search: {len(moved)}/{len(members)} activation grids moved ({narrower} narrower), "
        f"output error x{best / max(start, 1e-30):.2f} on {sum(len(b) for b in batches)} "
        f"calibration images; {trials} trials "
        f"({'deployed kernels' if deployed else 'reference arithmetic'}), {time.perf_counter() - t0:.0f} s"
    )
    return ctx
