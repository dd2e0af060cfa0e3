"""Training that survives a kill: the epoch-end state file every training stage keeps.

``plc train-teacher``, ``plc train-assistant`` and ``plc distill`` write
``<output>.train-state`` beside their output at the end of every epoch (``fit``'s snapshot:
weights, EMA, optimiser, schedule position, every RNG state, the stage's own generators and
FIG's queues) together with a *fingerprint*: the stage's config and the digests of its
inputs. The write is atomic (a temporary file, fsync, rename), so a kill at any moment leaves
the previous epoch's state whole. ``--resume`` continues from it, or starts from epoch 0 when
there is none; it refuses, naming the field, when the fingerprint differs from this run's.
Without ``--resume`` a state file found at the start is named in the error, never silently
used or overwritten. Publishing the final checkpoint removes it; so does a user error after
training (a failed training check: nothing is left half-written), while a crash, a kill or
Ctrl-C leave it for ``--resume``.

Resumed runs are byte-identical to uninterrupted ones on CPU (tests/stages/test_resume.py
kills each stage with SIGKILL to check it); on CUDA, up to non-deterministic kernels.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from stages.errors import USER_ERRORS, UserError

logger = logging.getLogger(__name__)

STATE_SUFFIX = ".train-state"


class ResumeError(UserError):
    """A state file that cannot be used as asked (leftover, or from another config)."""


def state_path(output: Path) -> Path:
    """``<output>.train-state``, beside the output (a checkpoint file or a run folder)."""
    output = Path(output)
    return output.with_name(output.name + STATE_SUFFIX)


class TrainingState:
    """The ``EpochState`` of one training stage (``pipeline.train.fit(state=...)``).

    Args:
        output: the stage's final checkpoint (or distill's run folder); the state file
            sits beside it.
        fingerprint: JSON-able config and input digests; a state written under another
            fingerprint is refused.
        resume: ``--resume`` was passed.
        command: the command, for messages (``"plc distill"``).

    Raises (from :meth:`load`):
        ResumeError: a state exists without ``--resume``, or it was written for another
            config or other inputs, or it cannot be read.
    """

    def __init__(
        self, output: Path, fingerprint: dict[str, Any], *, resume: bool, command: str
    ) -> None:
        self.path = state_path(output)
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
        self.resume = resume
        self.command = command
        self.saved = 0  # states written by this run

    @property
    def resuming(self) -> bool:
        """Whether :meth:`load` will return a state (``--resume`` and a state file)."""
        return self.resume and self.path.exists()

    def load(self) -> dict[str, Any] | None:
        """The snapshot to continue from; None to start from epoch 0."""
        if not self.path.exists():
            if self.resume:
                logger.info("--resume: no training state at %s; starting from epoch 0", self.path)
            return None
        if not self.resume:
            raise ResumeError(
                f"{self.path} holds the state of an interrupted {self.command} "
                f"({self._describe()}): rerun with --resume to continue from it, or delete "
                "the file to start over."
            )
        saved = self._read()
        differs = _differences(saved.get("fingerprint", {}), self.fingerprint)
        if differs:
            raise ResumeError(
                f"{self.path} was written by a run with {'; '.join(differs)}: --resume "
                "continues only the same run; rerun with its options, or delete the file "
                "to start over."
            )
        snapshot = saved["snapshot"]
        logger.warning(
            "%s: resuming from %s (after epoch %d of %d)",
            self.command,
            self.path,
            len(snapshot["history"]),
            snapshot["epochs"],
        )
        return snapshot

    def save(self, snapshot: dict[str, Any]) -> None:
        """Replace the state file with ``snapshot`` atomically (tmp, fsync, rename)."""
        import torch

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        record = {
            "fingerprint": self.fingerprint,
            "written": time.time(),
            "pid": os.getpid(),
            "snapshot": snapshot,
        }
        try:
            with open(tmp, "wb") as f:
                torch.save(record, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)
        self.saved += 1

    def finish(self) -> None:
        """The final checkpoint is published: the state is no longer needed."""
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> TrainingState:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        """A user error after this run wrote states (a failed training check) removes them;
        anything else (a crash, Ctrl-C) leaves them for ``--resume``."""
        if kind is not None and issubclass(kind, USER_ERRORS) and self.saved:
            self.finish()

    def _read(self) -> dict[str, Any]:
        import torch

        try:
            # mapped, not read: naming a leftover state must not read its 1.6 GB of weights
            return torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # a truncated or foreign file: say so, never a traceback
            raise ResumeError(
                f"{self.path} cannot be read as a training state ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); delete it to start over."
            ) from None

    def _describe(self) -> str:
        try:
            saved = self._read()
        except ResumeError:
            return "unreadable"
        snapshot = saved.get("snapshot", {})
        written = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(saved.get("written", 0)))
        return (
            f"after epoch {len(snapshot.get('history', []))} of {snapshot.get('epochs', '?')}, "
            f"written {written} by pid {saved.get('pid', '?')}"
        )


def drop_obsolete_state(output: Path) -> None:
    """Remove the state file of an output found up to date (a kill after publishing left it)."""
    path = state_path(output)
    if path.exists():
        logger.info("%s is up to date: removing the leftover %s", output, path)
        path.unlink(missing_ok=True)


def _differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """``field=saved (this run: current)`` for every leaf that differs, dotted names."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_differences(a, b, f"{name}."))
        elif a != b:
            out.append(f"{name}={a!r} (this run: {b!r})")
    return out


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
