"""What an algorithm gets and returns: the float model, the plan, and the data to look at."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx

from qvision.data import Dataset, Preprocess, iter_batches
from qvision.errors import QVisionError
from qvision.quant.plan import QuantPlan
from qvision.quant.stats import Statistics
from qvision.targets import Target


def with_step_names(progress) -> Callable[[int, int, str], None] | None:
    """A (done, total) progress callback as one that also takes what is running: API users'
    two-argument callbacks keep working, the CLI's show the step's name."""
    if progress is None:
        return None
    try:
        params = inspect.signature(progress).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return lambda done, total, _what: progress(done, total)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params):
        return progress
    return lambda done, total, _what: progress(done, total)


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
    # the float model's statistics on the calibration images, gathered with the ranges
    stats: Statistics = field(default_factory=Statistics)
    # progress(done, total, what) of long algorithms (layers or blocks done); None: quiet
    progress: Callable[[int, int, str], None] | None = None
    _images: list[np.ndarray] | None = field(default=None, repr=False)

    IMAGE_CACHE_BYTES = 1 << 30  # decoded calibration images kept between algorithms

    def step(self, what: str, done: int, total: int) -> None:
        """Report progress of a long algorithm (an hour of AdaRound must not be silent)."""
        if self.progress is not None:
            self.progress(done, total, what)

    def images(self) -> Iterator[np.ndarray]:
        """The calibration images, preprocessed, one batch-of-1 array each, in file order:
        decoded once per run and kept (up to IMAGE_CACHE_BYTES) for the next algorithm."""
        if self._images is not None:
            yield from self._images
            return
        if self.dataset is None:
            raise QVisionError("this algorithm needs calibration images (--calib)")
        kept: list[np.ndarray] | None = []
        used = 0
        for batch in iter_batches(self.dataset, self.preprocess, batch_size=1):
            if kept is not None:
                kept.append(batch.inputs)
                used += batch.inputs.nbytes
                if used > self.IMAGE_CACHE_BYTES:
                    kept = None
            yield batch.inputs
        self._images = kept

    def statistics(self, purpose: str, points: dict) -> dict:
        """Observers of ``points`` (tensor -> new observer) for ``purpose``: the ones the
        calibration pass gathered, and the rest gathered now in one more pass."""
        missing = {t: make for t, make in points.items() if t not in self.stats.of(purpose)}
        if missing:
            if self.dataset is None:
                raise QVisionError(f"{purpose} needs calibration images (--calib)")
            self.stats.gather(
                self.model,
                self.dataset,
                self.preprocess,
                self.input_name,
                {purpose: missing},
                threads=self.threads,
            )
        have = self.stats.of(purpose)
        return {t: have[t] for t in points}
