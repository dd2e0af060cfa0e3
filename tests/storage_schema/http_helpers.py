"""A loopback HTTP server for remote-store tests: 127.0.0.1, a free port, a thread, always shut.

``RangeHandler`` answers single ``Range: bytes=a-b`` / ``bytes=-n`` requests (zarr reads a
shard's index and chunks by range, as from any real HTTP server or object store); the plain
``SimpleHTTPRequestHandler`` ignores ranges, which the checksums must then catch.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static files, no log lines; ignores Range headers (answers the whole file)."""

    def log_message(self, format: str, *args: object) -> None:
        pass


class RangeHandler(QuietHandler):
    """Static files with single-range support (206 Partial Content)."""

    def send_head(self):  # type: ignore[override]
        self._remaining = None
        rng, path = self.headers.get("Range"), self.translate_path(self.path)
        if rng is None or not os.path.isfile(path):
            return super().send_head()
        m, size = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip()), os.path.getsize(path)
        if m is None or m[1] == m[2] == "":
            self.send_error(416)
            return None
        if m[1] == "":
            start, end = max(0, size - int(m[2])), size - 1
        else:
            start, end = int(m[1]), min(int(m[2]) if m[2] else size - 1, size - 1)
        if start > end:
            self.send_error(416)
            return None
        f = open(path, "rb")  # noqa: SIM115 - closed by the base class after copyfile
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self._remaining = end - start + 1
        return f

    def copyfile(self, source, outputfile) -> None:  # type: ignore[override]
        if self._remaining is None:
            return super().copyfile(source, outputfile)
        outputfile.write(source.read(self._remaining))
        return None


@contextlib.contextmanager
def serve(root: Path, handler: type = RangeHandler) -> Iterator[str]:
    """Serve ``root`` at ``http://127.0.0.1:<free port>`` in a thread; shut down on exit."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class FlakyHandler(RangeHandler):
    """A server with faults on a fixed schedule over its GET requests (all threads counted
    together): every 5th from the 2nd is dropped (connection closed, no answer), every 7th
    from the 4th answered 503, every 11th from the 6th range request truncated (the headers
    promise more bytes than are sent). ``faults`` counts what was done."""

    lock = threading.Lock()
    count = 0
    faults: ClassVar[dict[str, int]] = {"dropped": 0, "503": 0, "truncated": 0}

    @classmethod
    def reset(cls) -> None:
        with cls.lock:
            cls.count = 0
            cls.faults = {"dropped": 0, "503": 0, "truncated": 0}

    def do_GET(self) -> None:
        with FlakyHandler.lock:
            FlakyHandler.count += 1
            n = FlakyHandler.count
        if n % 5 == 2:
            FlakyHandler.faults["dropped"] += 1
            self.close_connection = True
            return  # nothing sent: the client sees the connection close
        if n % 7 == 4:
            FlakyHandler.faults["503"] += 1
            self.send_error(503, "try again")
            return
        self._truncate = n % 11 == 6 and self.headers.get("Range") is not None
        super().do_GET()

    def copyfile(self, source, outputfile) -> None:  # type: ignore[override]
        if getattr(self, "_truncate", False) and self._remaining and self._remaining > 1:
            FlakyHandler.faults["truncated"] += 1
            outputfile.write(source.read(self._remaining // 2))
            self.close_connection = True
            return None
        return super().copyfile(source, outputfile)


class CorruptOnceHandler(RangeHandler):
    """Flips one bit in the body of the first range response of more than 8 bytes (a fault
    in transit: the file on disk is sound). ``flipped`` says whether it happened."""

    flipped = False

    def copyfile(self, source, outputfile) -> None:  # type: ignore[override]
        if self._remaining is not None and self._remaining > 8 and not CorruptOnceHandler.flipped:
            CorruptOnceHandler.flipped = True
            blob = bytearray(source.read(self._remaining))
            blob[len(blob) // 2] ^= 0x01
            outputfile.write(bytes(blob))
            return None
        return super().copyfile(source, outputfile)
