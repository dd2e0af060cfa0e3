"""A real Dask cluster: `dask scheduler` + two `dask worker` processes on 127.0.0.1.

The processes are started for the module (free ports, no dashboard), waited for with a
bound, and always killed at the end. The store they write is compared byte for byte with the
in-process one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from precompute_inputs import EPOCH, make_inputs, plc, precompute_args, same_store

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask(*args: str) -> list[str]:
    """The ``dask`` command of this interpreter's environment."""
    return [str(Path(sys.executable).with_name("dask")), *args]


def _stop(procs: list[subprocess.Popen]) -> None:
    """Terminate, then kill what is still running after 10 s."""
    for p in reversed(procs):
        p.terminate()
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


def _worker(address: str, name: str, log: Path, *extra: str) -> subprocess.Popen:
    cmd = _dask("worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-dashboard",
                "--name", name, "--memory-limit", "0", *extra)  # fmt: skip
    return _popen(cmd, log)


def _popen(cmd: list[str], log: Path) -> subprocess.Popen:
    """Start ``cmd`` with its stderr in ``log`` (one torch thread: the CPU is shared)."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    with open(log, "wb") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)


def _wait_for_workers(address: str, n: int, timeout: float) -> None:
    from distributed import Client

    with Client(address, timeout=timeout) as client:
        client.wait_for_workers(n, timeout=timeout)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Address of a scheduler with two single-threaded workers (killed afterwards)."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("dask_logs")
    procs: list[subprocess.Popen] = []
    try:
        cmd = _dask("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")
        procs.append(_popen(cmd, logs / "scheduler.log"))
        procs += [_worker(address, f"w{i}", logs / f"worker{i}.log") for i in range(2)]
        _wait_for_workers(address, 2, timeout=60)
        yield address
    finally:
        _stop(procs)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_inputs(tmp_path_factory.mktemp("cluster"))


def test_scheduler_and_two_workers_write_the_in_process_bytes(
    scheduler: str, inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    local, remote = tmp_path / "local.zarr", tmp_path / "remote.zarr"
    plc(*precompute_args(inputs, local))
    plc(*precompute_args(inputs, remote), "--scheduler", scheduler)
    assert same_store(remote, local) == []


def test_gpu_tasks_without_gpu_workers_fail_with_a_clear_message(
    scheduler: str, inputs: dict[str, Path], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from stages.cli import app

    out = tmp_path / "gpu.zarr"
    args = [*precompute_args(inputs, out), "--scheduler", scheduler, "--gpu"]
    start = time.monotonic()
    result = CliRunner().invoke(app, [*args, "--task-timeout", "2"])
    assert time.monotonic() - start < 30
    assert result.exit_code == 1
    assert "advertises resources GPU=1" in result.output
    assert "dask worker --resources GPU=1" in result.output and "--task-timeout" in result.output
    assert not out.exists()


def test_gpu_tasks_run_on_workers_that_advertise_a_gpu(
    scheduler: str, inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A third worker advertises GPU=1 (its device stays the CPU): --gpu tasks run there."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    gpu = _worker(scheduler, "gpu0", tmp_path / "gpu0.log", "--resources", "GPU=1")
    try:
        _wait_for_workers(scheduler, 3, timeout=60)
        local, remote = tmp_path / "local.zarr", tmp_path / "remote.zarr"
        plc(*precompute_args(inputs, local))
        plc(*precompute_args(inputs, remote), "--scheduler", scheduler, "--gpu")
        assert same_store(remote, local) == []
    finally:
        _stop([gpu])
