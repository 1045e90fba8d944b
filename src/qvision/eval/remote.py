"""``evaluate`` on an executor: the images split into shards (whole batches, in the order
the local loop batches them), each shard decoded, preprocessed and run through the model
(and its reference) where the executor puts it; the outputs come back and feed the task's
adapter here, in order, so the metrics are the local run's. What scales is decoding and
inference; the adapter's own work (decoding boxes, matching) stays in this process."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from qvision.data import LoadReport, Preprocess, iter_batches
from qvision.data.datasets import batch_order

SHARDS_PER_WORKER = 4  # small enough to balance the workers, large enough to amortize sessions


@dataclass(frozen=True)
class EvalJob:
    """What every shard reads: models as paths here or bytes there, the data as a path."""

    model: object
    reference: object | None
    data: str
    task: str
    preprocess: Preprocess
    batch_size: int
    strict: bool
    threads: int | None


class _Opened:
    """A job opened in one worker process: its images and both sessions."""

    def __init__(self, job: EvalJob):
        from qvision.cluster import materialize
        from qvision.cluster.files import data_path
        from qvision.eval.evaluate import Runner, open_model
        from qvision.eval.tasks.adapters import ADAPTERS

        self.dataset = ADAPTERS[job.task].open(data_path(job.data))
        self.where = {str(s.path): i for i, s in enumerate(self.dataset.samples)}
        model = materialize(job.model)
        self.run = Runner(model, open_model(model)[1], job.threads)
        self.ref = None
        if job.reference is not None:
            reference = materialize(job.reference)
            self.ref = Runner(reference, open_model(reference)[1], job.threads)


def run_shard(job: EvalJob, positions: list[int]):
    """The model's (and reference's) outputs for each batch of the shard's images:
    ``(batches, skipped)``, a batch being (positions, outputs, reference outputs)."""
    from qvision.cluster import opened

    o = opened(job, _Opened)
    shard = copy.copy(o.dataset)
    shard.samples = [o.dataset.samples[i] for i in positions]
    load, out = LoadReport(), []
    for batch in iter_batches(shard, job.preprocess, job.batch_size, job.strict, load):
        index = [o.where[str(s.path)] for s in batch.samples]
        out.append((index, o.run(batch.inputs), None if o.ref is None else o.ref(batch.inputs)))
    return out, load.skipped


def shards(dataset, pre: Preprocess, batch_size: int, workers: int) -> list[list[int]]:
    order = batch_order(dataset, pre, batch_size)
    batches = -(-len(order) // batch_size)
    per = max(1, -(-batches // (workers * SHARDS_PER_WORKER))) * batch_size
    return [order[i : i + per] for i in range(0, len(order), per)]


def feed_remote(
    adapter,
    dataset,
    executor,
    load: LoadReport,
    progress=None,
    *,
    model,
    reference,
    data,
    task: str,
    preprocess: Preprocess,
    batch_size: int,
    strict: bool,
) -> int:
    """Like ``evaluate.feed``, the batches computed by ``executor``; images scored."""
    parts = shards(dataset, preprocess, batch_size, executor.workers())
    job = EvalJob(
        executor.ship(model),
        None if reference is None else executor.ship(reference),
        str(Path(data).resolve()),
        task,
        preprocess,
        batch_size,
        strict,
        executor.threads,
    )
    sizes = [len(p) for p in parts]

    def shard_progress(done: int, _total: int) -> None:
        if progress:
            progress(sum(sizes[:done]), len(dataset))

    done = 0
    for batches, skipped in executor.map(run_shard, parts, job, shard_progress):
        for index, outs, refs in batches:
            adapter.update(outs, [dataset.samples[i] for i in index], refs)
            done += len(index)
        load.skipped.extend(skipped)
    return done
