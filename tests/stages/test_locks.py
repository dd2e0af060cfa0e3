"""One output, one writer: real processes on one output, a stale lock, another host's lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from precompute_inputs import SLOW_PLC, make_inputs, precompute_args

from stages.locks import LockedError, lock_path, output_lock


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "x.zarr"
    with output_lock(out, "writer A") as path:
        assert path == lock_path(out) == tmp_path / "x.zarr.lock"
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "writer A"
        with pytest.raises(LockedError) as info, output_lock(out, "writer B"):
            pass
        msg = str(info.value)
        assert f"{out} is being written by pid {os.getpid()} on host {socket.gethostname()}" in msg
        assert "(writer A)" in msg and "remove the lock file" in msg
    assert not path.exists()  # released on exit


def test_the_lock_is_released_when_the_stage_fails_and_empty_folders_go(tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper" / "x.pt"
    with pytest.raises(RuntimeError), output_lock(out):
        assert lock_path(out).exists()
        raise RuntimeError("boom")
    assert not lock_path(out).exists() and not (tmp_path / "new").exists()


def test_a_dead_processs_lock_is_taken_over_with_a_warning(tmp_path: Path, caplog) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=60)  # its pid is no longer running
    out = tmp_path / "x.zarr"
    stale = {"pid": dead.pid, "host": socket.gethostname(), "started": 0, "command": "old writer"}
    lock_path(out).write_text(json.dumps(stale))
    with output_lock(out, "new writer") as path:
        assert json.loads(path.read_text())["command"] == "new writer"
    assert "taking over the stale lock" in caplog.text and "old writer" in caplog.text


def test_another_hosts_lock_is_named_not_taken(tmp_path: Path) -> None:
    out = tmp_path / "x.zarr"
    theirs = {"pid": 1, "host": "elsewhere.example", "started": 0, "command": "plc precompute"}
    lock_path(out).write_text(json.dumps(theirs))
    with pytest.raises(LockedError, match=r"pid 1 on host elsewhere\.example"), output_lock(out):
        pass
    assert json.loads(lock_path(out).read_text()) == theirs  # untouched


@pytest.mark.slow
def test_two_real_precomputes_on_one_output(tmp_path: Path) -> None:
    """The first (slowed) holds the lock; the second stops at once naming it, writes nothing;
    the first finishes and publishes; its lock is gone."""
    inputs = make_inputs(tmp_path / "in")
    out = tmp_path / "labels" / "g.zarr"
    args = [str(a) for a in precompute_args(inputs, out, shard_size=4)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-c", SLOW_PLC, *args], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not lock_path(out).exists():
            assert first.poll() is None, first.communicate()[0][-2000:]
            assert time.monotonic() < deadline, "the first precompute took no lock in 120 s"
            time.sleep(0.05)
        start = time.monotonic()
        second = subprocess.run([sys.executable, "-c", SLOW_PLC, *args], env=env,
                                capture_output=True, text=True, timeout=300)  # fmt: skip
        text = second.stdout + second.stderr
        assert second.returncode == 1, text[-2000:]
        assert f"is being written by pid {first.pid} on host" in text and "plc precompute" in text
        assert "Traceback" not in text
        assert time.monotonic() - start < 60  # it stopped at once, before loading anything big
        assert first.wait(timeout=300) == 0, first.communicate()[0][-2000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=60)
    assert (out / "zarr.json").exists() and not lock_path(out).exists()
