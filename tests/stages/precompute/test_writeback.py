"""Tests for stages.precompute.writeback: the bounded background write queue."""

from __future__ import annotations

import threading
import time

import pytest

from stages.precompute.writeback import WriteQueue


def test_jobs_run_in_order_on_another_thread() -> None:
    seen: list[tuple[int, str]] = []
    with WriteQueue(depth=2) as q:
        for i in range(20):
            q.submit(lambda i=i: seen.append((i, threading.current_thread().name)))
    assert [i for i, _ in seen] == list(range(20))
    assert {name for _, name in seen} == {"plc-write-queue"}


def test_submit_blocks_while_depth_jobs_wait() -> None:
    gate = threading.Event()
    q = WriteQueue(depth=1)
    q.submit(gate.wait)  # running
    q.submit(lambda: None)  # waiting: the queue is full now
    blocked = threading.Thread(target=q.submit, args=(lambda: None,))
    blocked.start()
    time.sleep(0.2)
    assert blocked.is_alive()  # bounded: the third job waits for room
    gate.set()
    blocked.join(timeout=10)
    q.close()


def test_a_failed_job_is_raised_by_the_next_submit_and_by_close() -> None:
    ran: list[int] = []
    q = WriteQueue()

    def fail() -> None:
        raise OSError("disk full")

    q.submit(fail)
    time.sleep(0.2)
    with pytest.raises(OSError, match="disk full"):
        q.submit(lambda: ran.append(1))
    with pytest.raises(OSError, match="disk full"):
        q.close()
    assert ran == []  # nothing runs after a failure


def test_the_callers_error_wins_and_the_thread_stops() -> None:
    q = WriteQueue()
    with pytest.raises(KeyError), q:
        q.submit(lambda: (_ for _ in ()).throw(OSError("late")))
        raise KeyError("caller")
    assert not q._thread.is_alive()
    with pytest.raises(ValueError, match="depth must be >= 1"):
        WriteQueue(depth=0)
