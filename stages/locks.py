"""One output, one writer: a lock file taken atomically beside a stage's output.

Two ``plc precompute`` (or two training runs) started on the same output would interleave
their writes. Each stage that writes an output holds ``<output>.lock`` while it runs: the file
is created with ``O_CREAT | O_EXCL`` (atomic on a local filesystem and on NFSv3+), holds who
took it (pid, host, start time, command), and is removed on exit, also on an error or Ctrl-C.
A second writer stops at once with one sentence naming the holder. A lock left by a process
that died (SIGKILL, a crash, a reboot) is *stale*: when its host is this host and its pid is
not running, the next writer takes it over with a warning; a lock of another host cannot be
checked from here and is named, with how to remove it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from stages.errors import UserError

logger = logging.getLogger(__name__)

R = TypeVar("R")


class LockedError(UserError):
    """The output is being written by another process."""


def lock_path(output: Path) -> Path:
    """``<output>.lock``, beside the output (a file or a store folder)."""
    output = Path(output)
    return output.with_name(output.name + ".lock")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _holder_text(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {started}"
        f" ({holder.get('command', '?')})"
    )


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written this instant, or not ours: treat as held


def _try_create(path: Path, holder: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(holder, f)
    return True


@contextlib.contextmanager
def output_lock(output: Path, command: str | None = None) -> Iterator[Path]:
    """Hold ``<output>.lock`` for the duration of the block.

    Args:
        output: the stage's output (its lock goes beside it; the folder is created).
        command: what holds it, for the message a second writer gets (default: argv).

    Raises:
        LockedError: another live process holds the lock (or one on another host).
    """
    from stages.outputs import check_writable

    path = lock_path(output)
    check_writable(Path(output))  # the stage's own message for an output it cannot write
    created = []  # folders made for the lock, removed again if the stage leaves them empty
    for folder in reversed([*path.parents]):
        if not folder.exists():
            folder.mkdir()
            created.append(folder)
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.time(),
        "command": command or " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:]),
    }
    for _ in range(3):  # a stale lock taken over, or one that vanished between two looks
        if _try_create(path, me):
            break
        holder = _read(path)
        if holder is None:
            continue  # released in between
        stale = (
            holder.get("host") == me["host"]
            and isinstance(holder.get("pid"), int)
            and not _alive(holder["pid"])
        )
        if not stale:
            raise LockedError(
                f"{output} is being written by {_holder_text(holder)}; wait for it to finish "
                f"(its lock is {path}). If that process is gone (another host cannot be "
                "checked from here), remove the lock file and run again."
            )
        if _read(path) == holder:  # still the dead holder's: take it over
            logger.warning(
                "taking over the stale lock %s of %s (that process is not running)",
                path, _holder_text(holder),
            )  # fmt: skip
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    else:
        raise LockedError(f"could not take the lock {path}: other writers keep taking it.")
    try:
        yield path
    finally:
        if _read(path) == me:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for folder in reversed(created):
            with contextlib.suppress(OSError):  # not empty: the stage wrote there
                folder.rmdir()


def holds_output_lock(
    command: str, output: Callable[[Any], Path]
) -> Callable[[Callable[[Any], R]], Callable[[Any], R]]:
    """Decorate a stage's ``run(cfg)`` to hold ``<output(cfg)>.lock`` while it runs."""

    def wrap(fn: Callable[[Any], R]) -> Callable[[Any], R]:
        @functools.wraps(fn)
        def run(cfg: Any) -> R:
            with output_lock(output(cfg), command):
                return fn(cfg)

        return run

    return wrap
