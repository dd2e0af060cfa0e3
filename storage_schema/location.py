"""Where a store lives (a local directory or a read-only fsspec URL) and which copy is open.

A published store is replaced by renaming a new directory over it (``precompute --force``),
so a reader that opened the old one would, without care, read the new one's chunks through
the same path. :class:`Pin` remembers which directory was opened (device, inode and change
time of the store directory) and every read checks it afterwards: a read either comes whole
from the copy that was opened, or fails with one sentence saying the store was republished.
Remote stores (``http(s)://``, ``s3://``, any fsspec URL) are read-only and assumed not to be
replaced while they are read (HTTP has no cheap identity check).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import zarr

from storage_schema.errors import StoreError

logger = logging.getLogger(__name__)

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_OPEN_ATTEMPTS = 5
T = TypeVar("T")
Generation = tuple[int, int, int] | None


def is_url(path: str | Path) -> bool:
    """True for a ``scheme://...`` string other than ``file://`` (which is a local path)."""
    return isinstance(path, str) and bool(_SCHEME.match(path)) and not path.startswith("file://")


@dataclass(frozen=True)
class Location:
    """A store's address: ``local`` for a directory on this machine, else ``url``."""

    local: Path | None
    url: str | None

    def __str__(self) -> str:
        return str(self.local) if self.local is not None else str(self.url)

    def join(self, name: str) -> str:
        """The address of ``name`` inside the store (a path or a URL)."""
        if self.local is not None:
            return str(self.local / name)
        return f"{str(self.url).rstrip('/')}/{name}"

    @property
    def is_http(self) -> bool:
        return self.url is not None and self.url.startswith(("http://", "https://"))

    def open_group(self) -> zarr.Group:
        """The store's root group, read-only (consolidated metadata when present); over HTTP
        every read retries transient failures (:mod:`storage_schema.remote`)."""
        if self.is_http:
            from storage_schema.remote import register

            register()
        try:
            return zarr.open_group(self.local if self.local is not None else self.url, mode="r")
        except Exception as err:
            # a local store moved away while it was opened (a republish by two renames):
            # the StoreError open_consistent retries on, not zarr's bare not-found error
            missing = type(err).__name__ in ("FileNotFoundError", "GroupNotFoundError")
            if self.local is not None and missing:
                raise StoreError(
                    f"store {self.local} does not exist; check the path or build it first."
                ) from None
            raise

    def read_bytes(self, name: str) -> bytes:
        """The bytes of the plain file ``name`` inside the store (FileNotFoundError if absent)."""
        if self.local is not None:
            return (self.local / name).read_bytes()
        if self.is_http:  # through the retrying filesystem's cat_file (one retried GET)
            import fsspec

            from storage_schema.remote import register

            register()
            return fsspec.filesystem("http").cat_file(self.join(name))
        import fsspec

        with fsspec.open(self.join(name), "rb") as f:
            return f.read()

    def generation(self) -> Generation:
        """Identity of the directory now at ``local`` (None when absent, or for a URL)."""
        if self.local is None:
            return None
        try:
            st = os.stat(self.local)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_ctime_ns)

    def nbytes(self) -> int | None:
        """Bytes on disk of a local store (None for a URL)."""
        if self.local is None:
            return None
        return sum(f.stat().st_size for f in self.local.rglob("*") if f.is_file())


def locate(path: str | Path) -> Location:
    """A :class:`Location` for a local path (``str``, ``Path`` or ``file://``) or a URL."""
    if isinstance(path, Path):
        return Location(path, None)
    if not isinstance(path, str) or not path:
        raise StoreError(f"a store path must be a non-empty path or URL, got {path!r}.")
    if path.startswith("file://"):
        return Location(Path(path[len("file://") :]), None)
    if is_url(path):
        return Location(None, path.rstrip("/"))
    return Location(Path(path), None)


class Pin:
    """The copy of a store a reader opened; :meth:`check` refuses once it was replaced."""

    def __init__(self, location: Location, what: str, generation: Generation) -> None:
        self.location = location
        self.what = what
        self.generation = generation

    def check(self) -> None:
        """Raise StoreError if the directory at the store's path is no longer the opened one."""
        if self.generation is not None and self.location.generation() != self.generation:
            raise StoreError(
                f"{self.what} {self.location} was replaced (republished) while it was open; "
                "reopen it (rerun the command) to read the new store."
            )


def open_consistent(location: Location, what: str, opener: Callable[[], T]) -> tuple[T, Pin]:
    """Run ``opener`` (which reads the store's metadata) against one unchanging copy.

    A republish during the open makes it start again on the new copy, so the result always
    describes one complete store.

    Raises:
        StoreError: from ``opener``, or when the store changed on every one of 5 attempts.
    """
    for _ in range(_OPEN_ATTEMPTS):
        before = location.generation()
        try:
            result = opener()
        except StoreError:
            if location.generation() != before:
                continue  # replaced while opening: try the new copy
            raise
        if location.generation() == before:
            return result, Pin(location, what, before)
        logger.info("%s %s was republished while opening; opening it again", what, location)
    raise StoreError(
        f"{what} {location} was replaced {_OPEN_ATTEMPTS} times while it was being opened; "
        "retry once its writer has finished."
    )


def open_error(location: Location, what: str, err: Exception) -> StoreError:
    """One sentence for a store that cannot be opened at all (missing, unreachable)."""
    name = type(err).__name__
    if location.local is None and name in ("GroupNotFoundError", "FileNotFoundError", "KeyError"):
        return StoreError(f"{what} {location} was not found (no zarr.json there); check the URL.")
    return StoreError(f"cannot open {what} {location}: {name}: {err}.")


def read_attrs(location: Location, what: str) -> dict[str, Any]:
    """Open the store read-only and return its attributes, refusing clearly."""
    if location.local is not None:
        path = location.local
        if not path.exists():
            raise StoreError(f"{what} {path} does not exist; check the path or build it first.")
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{path} is not a Zarr v3 store (no zarr.json); expected a {what}.")
    try:
        attrs = dict(location.open_group().attrs)
    except StoreError:
        raise
    except Exception as err:
        raise open_error(location, what, err) from None
    if location.is_http:
        check_ranges(location, what)
    return attrs


def check_ranges(location: Location, what: str, timeout: float = 30.0) -> None:
    """Refuse an HTTP server that ignores Range requests, in one sentence.

    Zarr reads a shard's index and each chunk as byte ranges. A server that answers a range
    request with ``200`` and the whole file (``python -m http.server`` does) hands every
    range the wrong bytes, which the checksums would then report as corruption in every
    array: a false alarm about a sound store. One 1-byte range request for ``zarr.json``
    tells the two apart before anything is read. A network error here is left to the reads
    that follow (they name it).
    """
    import urllib.error
    import urllib.request

    url = location.join("zarr.json")
    request = urllib.request.Request(url, headers={"Range": "bytes=0-0"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read(2)
    except (urllib.error.URLError, OSError):
        return
    if status == 200 and len(body) > 1:
        raise StoreError(
            f"the server of {what} {location} ignores HTTP Range requests (it answered a "
            "1-byte range request for zarr.json with the whole file), so no chunk can be read "
            "from it; serve the folder with a server that supports ranges (nginx, caddy, "
            "`npx http-server`, `rclone serve http`, an object store) or copy the store locally."
        )
