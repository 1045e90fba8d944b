"""What an algorithm gets and returns: the float model, the plan, and the data to look at."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from qvision.data import Dataset, Preprocess
from qvision.quant.plan import QuantPlan
from qvision.targets import Target


@dataclass
class Context:
    model: onnx.ModelProto  # prepared float model; algorithms may edit its initializers
    plan: QuantPlan | None
    target: Target
    dataset: Dataset | None  # None when replaying a saved plan (data-free algorithms only)
    preprocess: Preprocess
    input_name: str
    threads: int | None = None
    # tensor -> (mean, std) per channel of a pre-activation, from folded BatchNorms;
    # kept in step by algorithms that rescale channels (CLE)
    bn_stats: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    # per-algorithm settings, e.g. {"adaround": {"iters": 5000}} (QuantConfig.algo_options)
    options: dict[str, dict] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)  # one line per change, for the result JSON
