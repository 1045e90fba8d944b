"""What an algorithm gets and returns: the float model, the plan, and the data to look at."""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from qvision.data import Dataset, Preprocess
from qvision.plan import QuantPlan
from qvision.targets import Target


@dataclass
class Context:
    model: onnx.ModelProto  # prepared float model; algorithms may edit its initializers
    plan: QuantPlan | None
    target: Target
    dataset: Dataset
    preprocess: Preprocess
    input_name: str
    threads: int | None = None
    log: list[str] = field(default_factory=list)  # one line per change, for the result JSON
