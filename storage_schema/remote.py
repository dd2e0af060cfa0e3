"""HTTP reads that ride out a flaky server: bounded retries with exponential backoff.

Students on other machines read a shared label store over HTTP, and networks drop
connections, proxies answer 502/503/504, servers throttle with 429 and a response can arrive
truncated. Every HTTP read of a store (zarr's chunk and shard-index ranges, metadata, plain
files) goes through :class:`RetryingHTTPFileSystem`: a transient failure is retried after
0.2 s, 0.4 s, 0.8 s, … (at most 5 s apart) until ``PLC_HTTP_RETRY_SECONDS`` (default 60)
have passed since the first try, then the read stops with one sentence naming the URL, the
last error and what to do (:class:`~storage_schema.errors.RemoteReadError`). A 404 or 403 is
an answer, not a fault: it is not retried. Retries never change what is read: a response is
used only when it arrived whole (aiohttp checks its Content-Length) and every chunk still
passes its crc32c.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from storage_schema.errors import RemoteReadError

logger = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
FIRST_DELAY = 0.2
MAX_DELAY = 5.0


def retry_seconds() -> float:
    """The total time a read keeps retrying: ``PLC_HTTP_RETRY_SECONDS`` (default 60)."""
    raw = os.environ.get("PLC_HTTP_RETRY_SECONDS", "60")
    try:
        value = float(raw)
    except ValueError:
        raise RemoteReadError(
            f"PLC_HTTP_RETRY_SECONDS must be a number of seconds, got {raw!r}."
        ) from None
    if value < 0:
        raise RemoteReadError(f"PLC_HTTP_RETRY_SECONDS must be >= 0, got {value}.")
    return value


def transient(err: BaseException) -> bool:
    """True for a failure worth retrying: a dropped or refused connection, a timeout, a
    truncated body, or an HTTP status of :data:`RETRY_STATUS`."""
    import aiohttp

    if isinstance(err, aiohttp.ClientResponseError):
        return err.status in RETRY_STATUS
    return isinstance(
        err, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | asyncio.TimeoutError
    )


async def with_retries(url: str, attempt: Callable[[], Awaitable[T]], limit: float) -> T:
    """``await attempt()``, retried while it fails transiently and ``limit`` seconds allow."""
    start, delay, tries = time.monotonic(), FIRST_DELAY, 0
    while True:
        tries += 1
        try:
            return await attempt()
        except Exception as err:
            if not transient(err):
                raise
            elapsed = time.monotonic() - start
            if elapsed + delay > limit:
                raise RemoteReadError(
                    f"cannot read {url}: {type(err).__name__}: {str(err) or 'no detail'} "
                    f"({tries} tries in {elapsed:.0f} s); check that the server is up and "
                    "reachable, or allow longer retries with PLC_HTTP_RETRY_SECONDS "
                    f"(now {limit:g})."
                ) from None
            logger.info("retrying %s in %.1f s after %s", url, delay, type(err).__name__)
            await asyncio.sleep(delay)
            delay = min(2 * delay, MAX_DELAY)


@functools.cache
def _filesystem_class() -> type:
    """The retrying HTTP filesystem class, built once (fsspec then reuses its instances and
    their connection pools, as it does for its own classes)."""
    from fsspec.implementations.http import HTTPFileSystem

    class RetryingHTTPFileSystem(HTTPFileSystem):
        async def _cat_file(self, url, start=None, end=None, **kwargs):
            parent = super()._cat_file
            return await with_retries(
                url, lambda: parent(url, start=start, end=end, **kwargs), retry_seconds()
            )

        async def _info(self, url, **kwargs):
            parent = super()._info
            return await with_retries(url, lambda: parent(url, **kwargs), retry_seconds())

    return RetryingHTTPFileSystem


def register() -> None:
    """Make fsspec's ``http``/``https`` filesystem the retrying one in this process (zarr and
    ``fsspec.open`` then read every HTTP store through it, with their usual session handling).
    Idempotent."""
    import fsspec

    cls = _filesystem_class()
    for protocol in ("http", "https"):
        if fsspec.get_filesystem_class(protocol) is not cls:
            fsspec.register_implementation(protocol, cls, clobber=True)
