"""Helpers shared by the store modules: naming, time, JSON checks, publish-by-rename."""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import re
import shutil
import sys
import uuid
import warnings
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import zarr

from storage_schema import location
from storage_schema.errors import StoreError

logger = logging.getLogger(__name__)

PACKAGE = "plc-kd"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def package_version() -> str:
    """The installed plc-kd version, or ``"unknown"`` when run from an uninstalled tree."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:  # pragma: no cover - the package is installed
        return "unknown"


def now_iso(created: str | None) -> str:
    """``created`` as given, or the current UTC time in ISO 8601 (seconds)."""
    if created is not None:
        if not isinstance(created, str) or not created:
            raise StoreError(
                f"created must be a non-empty ISO time string or None, got {created!r}."
            )
        return created
    return datetime.now(UTC).isoformat(timespec="seconds")


def is_sha256(value: object) -> bool:
    """True for a lowercase 64-digit hex string."""
    return isinstance(value, str) and bool(_SHA256.match(value))


def check_name(value: object, field: str) -> str:
    """Refuse a name that is not safe as a Zarr array name (letters, digits, ``_ . -``)."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise StoreError(
            f"{field} must be a non-empty name of letters, digits, '_', '.' or '-', got {value!r}."
        )
    return value


def check_json(value: Any, field: str) -> Any:
    """Refuse ``value`` unless it survives a JSON round trip unchanged in meaning."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise StoreError(
            f"{field} must be JSON-serialisable (plain dicts, lists, str, numbers): {err}."
        ) from err


def check_classes(classes: object) -> list[str]:
    """At least two distinct non-empty class names."""
    ok = isinstance(classes, list | tuple) and all(isinstance(c, str) and c for c in classes)
    if not ok or len(classes) < 2 or len(set(classes)) != len(classes):
        raise StoreError(
            f"classes must be a list of at least 2 distinct non-empty names, got {classes!r}."
        )
    return list(classes)


def read_attrs(path: str | Path, what: str) -> dict[str, Any]:
    """Open ``path`` (a directory or URL) read-only as a Zarr group; its attributes."""
    return location.read_attrs(location.locate(path), what)


def consolidate(path: Path) -> None:
    """Write consolidated metadata (every array's metadata in the root ``zarr.json``), once.

    Readers then fetch one metadata file instead of one per array (what makes HTTP reads
    cheap). zarr warns that consolidation is not yet in the v3 spec; it is zarr-python's
    documented format, also read by xarray.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        zarr.consolidate_metadata(path)


def sibling(path: Path, suffix: str) -> Path:
    """``path`` with ``suffix`` appended to its name (same directory, same filesystem)."""
    return path.with_name(path.name + suffix)


WRITING_SUFFIX = ".writing"


def writing_path(path: Path) -> Path:
    """Where an unfinished label store for ``path`` lives: ``<path>.writing``."""
    return sibling(path, WRITING_SUFFIX)


def unique_tmp(path: Path) -> Path:
    """A fresh temporary sibling of ``path`` for one writer."""
    return sibling(path, f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def remove(path: Path) -> None:
    """Remove a file or directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns:
        False where the platform or filesystem cannot (then nothing was changed).
    """
    if not sys.platform.startswith("linux"):
        return False
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def publish_dir(tmp: Path, path: Path, *, overwrite: bool) -> Path:
    """Rename the finished directory ``tmp`` to ``path``; replace an old ``path`` if allowed.

    An old store is swapped with the new one in one atomic exchange where the filesystem
    supports it, so ``path`` always shows one complete store; readers that had the old one
    open notice the swap (see :class:`storage_schema.location.Pin`). Elsewhere the old store
    is first moved to a sibling name and the new one renamed into place: ``path`` never
    shows a half-written store, but is briefly absent.
    """
    if path.exists() and not overwrite:
        raise StoreError(f"{path} already exists; pass overwrite=True (--force) to replace it.")
    if path.exists() and exchange(tmp, path):
        remove(tmp)  # now the old store
        logger.info("published %s (atomic exchange)", path)
        return path
    old = sibling(path, f".old-{os.getpid()}-{uuid.uuid4().hex[:8]}") if path.exists() else None
    if old is not None:
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except OSError:
        if old is not None:
            os.replace(old, path)
        raise
    if old is not None:
        remove(old)
    logger.info("published %s", path)
    return path
