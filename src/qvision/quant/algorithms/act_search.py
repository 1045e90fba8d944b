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

import numpy as np
from pydantic import Field

from qvision.data.preprocess import concat_padded
from qvision.errors import QVisionError
from qvision.model.graph import GraphView
from qvision.model.load import fixed_batch
from qvision.quant.algorithms import base
from qvision.quant.algorithms.base import Change
from qvision.quant.algorithms.context import Context
from qvision.quant.constraints import clip_caps, fit_under, scale_groups
from qvision.quant.plan import QuantSpec
from qvision.quant.sim import Simulator
from qvision.targets import detect

MULTIPLES = (0.8, 0.9, 1.1)
IMAGES = 64
SWEEPS = 1
REF_BYTES = 256 * 2**20


def _inputs(ctx: Context, images: int) -> list[np.ndarray]:
    """The first ``images`` calibration images in batches of 8, or of the model's fixed batch."""
    inp = next(i for i in ctx.model.graph.input if i.name == ctx.input_name)
    fixed = fixed_batch(inp)
    batch = fixed or 8
    xs = []
    for x in ctx.images():
        xs.append(x)
        if len(xs) >= max(images, fixed):
            break
    if len(xs) < max(fixed, 1):
        raise QVisionError(f"act-search needs at least {max(fixed, 1)} calibration image(s)")
    full = len(xs) // batch * batch if fixed else len(xs)
    # a batch of text lines pads them to its widest, as iter_batches does
    return [
        concat_padded(xs[i : i + batch], ctx.preprocess.pad_value) for i in range(0, full, batch)
    ]


class Options(base.Options):
    images: int = Field(IMAGES, ge=1)  # calibration images the output error is measured on
    sweeps: int = Field(SWEEPS, ge=0)  # passes over the grids


def apply(ctx: Context, options: Options) -> Change:
    images, sweeps = options.images, options.sweeps
    plan, view = ctx.plan, GraphView(ctx.model)
    sim = Simulator(ctx.model, ctx.input_name, ctx.threads)
    ref = sim.reference(_inputs(ctx, images), REF_BYTES)
    batches = ref.batches
    deployed = ctx.target.name == detect()[0].name

    def error() -> float:
        return sim.relative_error(plan, ref, optimize=deployed)

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
    kernels = "deployed kernels" if deployed else "reference arithmetic"
    seen = sum(len(b) for b in batches)
    return Change(
        "activation grids",
        len(moved),
        f"act-search: {len(moved)}/{len(members)} activation grids moved ({narrower} narrower), "
        f"output error x{best / max(start, 1e-30):.2f} on {seen} "
        f"calibration images; {trials} trials ({kernels})",
        of=len(members),
        error="model output error (squared error / float output power, summed over outputs)",
        error_before=float(start),
        error_after=float(best),
        details={"narrower": narrower, "images": seen, "trials": trials, "kernels": kernels},
    )
