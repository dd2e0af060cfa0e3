"""Outputs that cannot be written: one sentence naming the path, the reason and what to do.

A full disk, a read-only mount or an ``--out`` under a regular file surface deep inside zarr
as a bare ``OSError``. :func:`check_writable` refuses the obvious cases before a stage does
any work; :func:`unwritable` turns what still fails while writing into an
:class:`OutputError` (a user error: one message, exit 1).
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


class OutputError(Exception):
    """An output path that cannot be written; the message names it and what to do."""


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem that holds (or would hold) ``path``."""
    current = existing_ancestor(path).resolve()
    while not os.path.ismount(current):
        current = current.parent
    return current


def existing_ancestor(path: Path) -> Path:
    """``path`` itself or its nearest ancestor that exists (as anything)."""
    current = Path(os.path.abspath(path))
    while not os.path.lexists(current) and current != current.parent:
        current = current.parent
    return current


def _reason(err: OSError, path: Path) -> str:
    """What went wrong, in words, for an ``OSError`` met writing ``path``."""
    if err.errno == errno.ENOSPC:
        return f"no space left on {mount_point(path)}"
    if err.errno == errno.EDQUOT:
        return f"disk quota exceeded on {mount_point(path)}"
    if err.errno == errno.EROFS:
        return f"{mount_point(path)} is mounted read-only"
    if err.errno in (errno.ENOTDIR, errno.EEXIST) and existing_ancestor(path).is_file():
        return f"{existing_ancestor(path)} is a file, not a folder"
    where = f" ({err.filename})" if err.filename else ""
    return f"{err.strerror or err}{where}"


def unwritable(err: OSError, path: Path, *, existed: bool, flag: str = "--out") -> OutputError:
    """The :class:`OutputError` for ``err`` raised while writing ``path``.

    Args:
        err: the error from the writer (which has already removed its temporary files).
        path: the output being written.
        existed: whether a previous output was at ``path`` (it is left as it was).
        flag: the option that chose ``path``.
    """
    kept = f"; the previous store at {path} is unchanged" if existed else ""
    return OutputError(
        f"cannot write {path}: {_reason(err, path)}. Nothing was published{kept}; "
        f"free space or fix the folder, or pass another {flag}."
    )


def check_writable(path: Path, *, flag: str = "--out") -> None:
    """Raise OutputError now if ``path`` (or its would-be parent folder) cannot be written.

    Catches an ancestor that is a regular file, a read-only mount and a folder without write
    permission before a stage spends minutes on work it could not save. A full disk shows
    only while writing (see :func:`unwritable`).
    """
    base = existing_ancestor(path.parent)
    problem = None
    if not base.is_dir():
        problem = f"{base} is a file, not a folder"
    elif os.statvfs(base).f_flag & os.ST_RDONLY:
        problem = f"{mount_point(base)} is mounted read-only"
    elif not os.access(base, os.W_OK | os.X_OK):
        problem = f"no permission to write in {base}"
    if problem:
        raise OutputError(f"cannot write {path}: {problem}; pass another {flag}.")


WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def write_failure(err: OSError, out: Path | None = None) -> str | None:
    """One sentence for a full disk, a quota or a read-only mount met by any stage's writer
    (deep inside zarr or torch.save), naming the file (else the stage's ``out``) and its
    mount; None for other errors."""
    if err.errno not in WRITE_ERRNOS or not (err.filename or out):
        return None
    path = Path(os.fsdecode(err.filename)) if err.filename else Path(out)  # type: ignore[arg-type]
    return (
        f"cannot write {path}: {_reason(err, path)}. The output was not published (a "
        "previous one is unchanged; an interrupted precompute resumes with --resume); free "
        "space or pass another --out."
    )
