"""A bounded background queue: encode and write shards while the next batch is computed.

One thread runs the submitted jobs in order. ``submit`` blocks while ``depth`` jobs wait
(bounded memory); the first failure is re-raised by the next ``submit`` and by ``close``, so
a failed write stops the run before anything is published.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from types import TracebackType

logger = logging.getLogger(__name__)

_STOP = object()


class WriteQueue:
    """Run jobs on one background thread, in submission order, at most ``depth`` waiting."""

    def __init__(self, depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}.")
        self._jobs: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="plc-write-queue", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            if self._error is None:  # after a failure, drain without running
                try:
                    job()
                except BaseException as err:  # surfaced by submit/close in the caller
                    logger.debug("background write failed: %s", err)
                    self._error = err

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, job: Callable[[], object]) -> None:
        """Queue ``job``; raise the error of an earlier job if one failed."""
        self._raise()
        self._jobs.put(job)

    def close(self) -> None:
        """Wait for every queued job; raise the first error."""
        if self._thread.is_alive():
            self._jobs.put(_STOP)
            self._thread.join()
        self._raise()

    def __enter__(self) -> WriteQueue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        with contextlib.suppress(BaseException):  # the caller's error is the one reported
            self.close()
