"""QuantConfig: the knobs of one quantization run, passed as one value through the pipeline.

api.quantize, pipeline.make_plan, analysis and autotune take this one object instead of
repeating a dozen parameters; autotune's trials are variations of it (dataclasses.replace).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path


@dataclass(frozen=True)
class QuantConfig:
    target: str = "auto"  # profile name, or 'auto' to pick from this machine's CPU
    method: str | None = None  # calibration method; None: the target's default
    weights: str = "int8"  # int8 | int4 (cap on weight bits)
    acts: int = 8  # activation bits: 8, or 4 (4-bit tensors; accuracy only, see planner)
    algos: str | tuple[str, ...] | None = None  # None: the target's default pipeline
    keep_float: tuple[str, ...] = ()  # node names left in float
    # node name -> weight bits, overriding the target and --weights (mixed precision)
    layer_bits: dict[str, int] = field(default_factory=dict)
    # per-algorithm settings, e.g. {"adaround": {"iters": 5000, "rows": 4096}}
    algo_options: dict[str, dict] = field(default_factory=dict)
    batch_size: int = 1  # calibration batch
    limit: int | None = None  # use only the first N calibration images
    strict: bool = False  # unreadable calibration image is fatal
    # shifted copies of each calibration image (darker, brighter, lower contrast, noise,
    # defocus) calibrated on beside it, so that ranges hold under such inputs (0: none)
    calib_shifts: int = 0
    # the quick shift check after writing: FP32 vs INT8 on shifted copies of this many
    # calibration images (0: off; None: 16 at 224x224 inputs, fewer for larger ones, at
    # least 4), scored by this task's agreement; it also chooses the calibration method
    # when none is given (quant/shiftsafe.py)
    check_images: int | None = None
    task: str | None = None  # None: the model's 'qvision.task' metadata, else classification

    def describe(self) -> dict:
        d = asdict(self)
        d["keep_float"] = list(self.keep_float)
        if isinstance(self.algos, tuple):
            d["algos"] = list(self.algos)
        return d

    def updated(self, **settings) -> QuantConfig:
        """A copy with ``settings`` (field names) changed; an unknown name is a TypeError,
        as for any keyword argument."""
        unknown = sorted(set(settings) - {f.name for f in fields(self)})
        if unknown:
            raise TypeError(f"unknown quantization setting '{unknown[0]}'")
        if "keep_float" in settings:
            settings["keep_float"] = tuple(settings["keep_float"] or ())
        for name in ("layer_bits", "algo_options"):
            if name in settings:
                settings[name] = dict(settings[name] or {})
        return replace(self, **settings)


@dataclass(frozen=True)
class TuneOptions:
    """``--max-drop``: the fastest configuration whose metric on ``data`` drops at most
    ``max_drop`` points."""

    max_drop: float
    data: str | Path | None  # labelled images (unlabelled: agreement with FP32)
    task: str = "classification"
    time_limit: float = 1800.0  # seconds
    images: int | None = None  # the first N of ``data`` only
