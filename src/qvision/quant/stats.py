"""Statistics of the float model on the calibration images, gathered once per run.

The planner needs a range per activation; an algorithm may need more (bias correction:
the mean of each channel going into a quantized layer). Each algorithm declares its
statistic points, tensor -> observer, as NNCF's statistic points do; the pipeline gathers
every declared point in the same pass over the images as the ranges, and the algorithm
reads them here. A point nobody gathered (an algorithm run on its own) is gathered the
first time it is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import onnx

from qvision.data import Dataset, LoadReport, Preprocess
from qvision.quant.calibrate import collect

RANGES = "ranges"  # the planner's purpose: one range observer per activation tensor

Requests = Mapping[str, Mapping[str, Callable[[], Any]]]  # purpose -> tensor -> new observer


class _Tee:
    """Several purposes' observers of one tensor, fed by one pass."""

    def __init__(self, parts: list[tuple[str, Any]]):
        self.parts = parts

    def update(self, x) -> None:
        for _, obs in self.parts:
            obs.update(x)

    @property
    def count(self) -> int:
        return self.parts[0][1].count


@dataclass
class Statistics:
    """Observers by purpose and tensor, for one version of the float model (``key``: the
    model-changing algorithms applied to it, since their output changes every statistic)."""

    key: str = ""
    points: dict[str, dict[str, Any]] = field(default_factory=dict)

    def of(self, purpose: str) -> dict[str, Any]:
        return self.points.get(purpose, {})

    def missing(self, purpose: str, tensors) -> list[str]:
        have = self.of(purpose)
        return [t for t in tensors if t not in have]

    def gather(
        self,
        model: onnx.ModelProto,
        dataset: Dataset,
        preprocess: Preprocess,
        input_name: str,
        requests: Requests,
        batch_size: int = 1,
        threads: int | None = None,
        strict: bool = False,
        progress=None,
        transform=None,
    ) -> LoadReport:
        """One pass (one per chunk of tensors, if they do not fit the memory budget at once)
        over ``dataset`` feeding every requested observer."""
        tensors = list(dict.fromkeys(t for req in requests.values() for t in req))

        def tee(t: str) -> _Tee:
            return _Tee([(p, req[t]()) for p, req in requests.items() if t in req])

        observers, report = collect(
            model,
            dataset,
            preprocess,
            tensors,
            tee,
            input_name,
            batch_size,
            threads=threads,
            strict=strict,
            progress=progress,
            transform=transform,
        )
        for t, both in observers.items():
            for purpose, obs in both.parts:
                self.points.setdefault(purpose, {})[t] = obs
        return report
