"""Shard tasks on Dask: a LocalCluster (``--workers N``) or a running scheduler (``--scheduler``).

Each worker builds its :class:`~stages.precompute.shard.PrecomputeWorker` once, through the
:class:`WorkerState` plugin, and frees it when the run unregisters the plugin. With
``--gpu`` every task asks for ``resources={'GPU': 1}``; a run whose tasks no worker can take
fails with one sentence after ``--task-timeout`` seconds instead of waiting forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

from distributed import Client, LocalCluster, WorkerPlugin, as_completed, get_worker

from stages.precompute.shard import PrecomputeWorker, ShardJob, ShardOutcome

logger = logging.getLogger(__name__)

GPU = {"GPU": 1}


class WorkerState(WorkerPlugin):
    """One :class:`PrecomputeWorker` per Dask worker, built at ``setup``, freed at ``teardown``.

    Its name holds the team's SHA-256, so a long-lived worker never serves a team whose
    checkpoints were rewritten at the same paths.
    """

    def __init__(self, inputs: dict[str, str], key: str, device: str) -> None:
        self.inputs, self.key, self.device = inputs, key, device
        self.worker: PrecomputeWorker | None = None

    @property
    def name(self) -> str:
        return f"plc-precompute-{self.key[:16]}"

    def setup(self, worker: Any) -> None:
        self.worker = PrecomputeWorker.load(self.inputs, self.key, self.device)

    def teardown(self, worker: Any) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None


def run_task(job: ShardJob, plugin: str) -> ShardOutcome:
    """The Dask task: run ``job`` on this worker's :class:`WorkerState` ``plugin``."""
    state = get_worker().plugins[plugin]
    return state.worker.run(job)


def _wait_for_capable_worker(client: Client, gpu: bool, timeout: float, where: str) -> None:
    """Return once a worker can run the tasks; else raise one sentence after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        capable = [w for w in workers if not gpu or w.get("resources", {}).get("GPU", 0) >= 1]
        if capable:
            return
        if time.monotonic() >= deadline:
            need = "advertises resources GPU=1 (start them with `dask worker --resources GPU=1`)"
            raise ValueError(
                f"no worker of {where} {need if gpu else 'is connected'} after waiting "
                f"{timeout:g} s (--task-timeout); "
                + ("drop --gpu or start GPU workers." if gpu else "start workers and rerun.")
            )
        time.sleep(0.2)


class DaskRunner:
    """Shard tasks on Dask, the team loaded once per worker for the whole run.

    Use as a context manager: entering connects (or starts a LocalCluster), waits for a
    worker able to run the tasks and registers the :class:`WorkerState`; leaving
    unregisters it (every worker frees its team) and closes what it started.
    """

    def __init__(
        self, state: WorkerState, workers: int, scheduler: str | None, gpu: bool, timeout: float
    ) -> None:
        self.state, self.workers, self.scheduler = state, workers, scheduler
        self.gpu, self.timeout = gpu, timeout
        self.where = scheduler or "the local cluster"
        self._stack = ExitStack()

    def __enter__(self) -> DaskRunner:
        try:
            address = self.scheduler
            if address is None:
                cluster = LocalCluster(
                    n_workers=self.workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
                address = self._stack.enter_context(cluster)
            self.client = self._stack.enter_context(Client(address, timeout=self.timeout))
            _wait_for_capable_worker(self.client, self.gpu, self.timeout, self.where)
            self.client.register_plugin(self.state, name=self.state.name)
            self._stack.callback(self.client.unregister_worker_plugin, self.state.name)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def run(
        self, jobs: list[ShardJob], track: Callable[[Iterator, int], Iterator]
    ) -> list[ShardOutcome]:
        """Run ``jobs`` (one future per shard); outcomes in job order."""
        futures = self.client.map(
            run_task,
            jobs,
            plugin=self.state.name,
            pure=False,
            resources=GPU if self.gpu else None,
        )
        done = {f.key: f.result() for f in track(as_completed(futures), len(futures))}
        return [done[f.key] for f in futures]
