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
