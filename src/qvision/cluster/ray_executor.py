"""Pieces of work as Ray tasks. The cluster is Ray's to find: ``address``, else
``RAY_ADDRESS``, else the cluster ``ray start`` made on this machine, else a new one here
(shut down again when the executor closes). Shared values go into the object store once;
a piece's worker that dies is retried by Ray (``max_retries``)."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from qvision.cluster.files import ModelFile
from qvision.errors import MissingExtraError, QVisionError


def run_piece(fn, shared, item):
    """What a Ray worker runs (its process title reads ``ray::run_piece``)."""
    return fn(shared, item)


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """A ``host:port`` that refuses connections fails here at once, not after Ray's minutes
    of retries (``auto`` and ``ray://`` addresses are Ray's to resolve)."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise QVisionError(f"cannot reach the Ray cluster at {address}: {reason}") from None


class RayExecutor:
    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        cpus_per_task: int = 1,
        max_retries: int = 3,
        num_cpus: int | None = None,
        threads: int | None = None,
    ):
        """``cpus_per_task``: CPUs Ray reserves per piece (so how many run at once);
        ``threads``: ONNX Runtime and PyTorch threads per piece (default: the same);
        ``num_cpus``: CPUs of a new local cluster (default: all)."""
        try:
            import ray
        except ImportError:
            raise MissingExtraError("ray", "ray", "--executor ray") from None
        if cpus_per_task < 1:
            raise QVisionError("cpus per task must be >= 1")
        self.ray, self.max_retries = ray, max_retries
        self.cpus, self.threads = cpus_per_task, threads or cpus_per_task
        self.started = False
        if not ray.is_initialized():
            # A new local cluster only when none is found (Ray's own rule for address=None).
            existing = address or os.environ.get("RAY_ADDRESS")
            if existing:
                _check_reachable(existing)
            try:
                ray.init(
                    address=address,
                    num_cpus=None if existing else num_cpus,
                    include_dashboard=False,
                    logging_level=logging.ERROR,
                    log_to_driver=False,
                    configure_logging=False,
                )
            except ConnectionError as exc:
                raise QVisionError(f"cannot reach the Ray cluster: {exc}") from None
            # close() disconnects; Ray stops the processes only of a cluster it started here
            self.started = True
        self.remote = ray.remote(run_piece)

    def workers(self) -> int:
        cpus = self.ray.cluster_resources().get("CPU", 1)
        return max(1, int(cpus // self.cpus))

    def ship(self, path) -> ModelFile:
        return ModelFile.read(path)

    def map(self, fn, items, shared=None, progress=None) -> list[Any]:
        ray = self.ray
        shared_ref = ray.put(shared)
        task = self.remote.options(
            num_cpus=self.cpus, max_retries=self.max_retries, retry_exceptions=False
        )
        index = {task.remote(fn, shared_ref, item): k for k, item in enumerate(items)}
        pending, results, done = list(index), [None] * len(items), 0
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    results[index[ref]] = self._get(ref, index[ref])
                    done += 1
                if progress:
                    progress(done, len(items))
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return results

    def _get(self, ref, k: int):
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, QVisionError):
                raise cause from None
            raise QVisionError(f"piece {k} failed on the cluster: {cause!r}") from None
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
            raise QVisionError(
                f"piece {k} lost its worker {self.max_retries + 1} times: {type(exc).__name__}"
            ) from None

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False
