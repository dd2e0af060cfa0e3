"""Remote stores: open, verify and read a store over loopback HTTP and any fsspec URL."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from http_helpers import QuietHandler, serve
from label_helpers import IDS, VARS, soft_maps, write_all

from storage_schema import StoreError, open_dataset_store, open_label_store, verify_store
from storage_schema.location import is_url, locate


@pytest.fixture
def stores(tmp_path: Path, make_dataset) -> Path:
    """``tmp_path/site`` holding ``d.zarr`` (dataset) and ``l.zarr`` (labels)."""
    site = tmp_path / "site"
    site.mkdir()
    make_dataset(site / "d.zarr", shard_size=2)
    write_all(site / "l.zarr", soft_maps())
    return site


def test_locate() -> None:
    assert is_url("http://h/x.zarr") and is_url("s3://b/x") and not is_url("file:///x")
    assert not is_url("labels/x.zarr") and not is_url(Path("http:/x"))  # type: ignore[arg-type]
    assert locate("file:///tmp/x.zarr").local == Path("/tmp/x.zarr")
    assert locate("https://h/x.zarr/").url == "https://h/x.zarr"
    assert (
        locate("https://h/x.zarr").join("manifest.parquet") == "https://h/x.zarr/manifest.parquet"
    )
    with pytest.raises(StoreError, match="non-empty path or URL"):
        locate("")


def test_http_open_read_verify(stores: Path, arrays) -> None:
    images, masks = arrays
    local = open_label_store(stores / "l.zarr")
    with serve(stores) as base:
        data = open_dataset_store(f"{base}/d.zarr")
        assert (
            data.path == f"{base}/d.zarr"
            and data.ids() == open_dataset_store(stores / "d.zarr").ids()
        )
        np.testing.assert_array_equal(data.read_images(slice(None)), images)
        np.testing.assert_array_equal(data.read_masks(np.array([3, 1])), masks[[3, 1]])
        labels = open_label_store(f"{base}/l.zarr", manifest_sha256=local.manifest_sha256)
        assert labels.ids == IDS
        for v in VARS:
            assert (
                labels.read_codes(v, slice(None)).tobytes()
                == local.read_codes(v, slice(None)).tobytes()
            )
        np.testing.assert_array_equal(labels.stat("dice"), local.stat("dice"))
        for name in ("d.zarr", "l.zarr"):
            summary = verify_store(f"{base}/{name}")
            assert summary["path"] == f"{base}/{name}" and "bytes" not in summary


def test_http_corrupt_chunk_named(stores: Path) -> None:
    file = next(
        f for f in (stores / "l.zarr" / "soft" / "plc" / "c" / "0").rglob("*") if f.is_file()
    )
    data = bytearray(file.read_bytes())
    data[1] ^= 0x10  # inside chunk 0 of shard 0: image 0
    file.write_bytes(bytes(data))
    with serve(stores) as base:
        with pytest.raises(StoreError, match=r"array 'soft/plc': 1 image\(s\) unreadable .*'img0'"):
            verify_store(f"{base}/l.zarr")
        with pytest.raises(
            StoreError, match=r"array 'soft/plc' cannot be read at image\(s\) 'img0'"
        ):
            open_label_store(f"{base}/l.zarr").read_codes("plc", 0)


def test_server_ignoring_ranges_is_named_not_reported_as_corruption(stores: Path) -> None:
    """``python -m http.server`` answers a range request with the whole file: opening the
    store says so in one sentence (what it once reported: crc32c mismatches in every array)."""
    sentence = r"ignores HTTP Range requests \(it answered a 1-byte range request for zarr.json"
    with serve(stores, QuietHandler) as base:
        with pytest.raises(StoreError, match=rf"label store {base}/l.zarr {sentence}"):
            open_label_store(f"{base}/l.zarr")
        with pytest.raises(StoreError, match=sentence):
            verify_store(f"{base}/d.zarr")
        from typer.testing import CliRunner

        from stages.cli import app

        result = CliRunner().invoke(app, ["verify", f"{base}/l.zarr"])
    assert result.exit_code == 1
    assert (
        "ignores HTTP Range requests" in result.output and "copy the store locally" in result.output
    )
    assert "crc32c" not in result.output and "Traceback" not in result.output


def test_missing_and_unreachable_urls(stores: Path) -> None:
    with serve(stores) as base:
        with pytest.raises(StoreError, match=rf"label store {base}/nope.zarr was not found"):
            open_label_store(f"{base}/nope.zarr")
        with pytest.raises(StoreError, match=rf"{base}/d.zarr is not a plc-kd label store"):
            open_label_store(f"{base}/d.zarr")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.MonkeyPatch.context() as mp:  # a server that stays down: retried, then named
        mp.setenv("PLC_HTTP_RETRY_SECONDS", "1")
        start = time.monotonic()
        with pytest.raises(StoreError, match=rf"cannot read http://127.0.0.1:{port}/l.zarr/zarr"
                           r"\.json: ClientConnectorError: .* tries in \d+ s\); check that the "
                           r"server is up .* PLC_HTTP_RETRY_SECONDS \(now 1\)"):  # fmt: skip
            verify_store(f"http://127.0.0.1:{port}/l.zarr")
        assert time.monotonic() - start < 10


def test_verify_cli_with_url(stores: Path) -> None:
    from typer.testing import CliRunner

    from stages.cli import app

    with serve(stores) as base:
        result = CliRunner().invoke(app, ["verify", f"{base}/l.zarr"])
    assert result.exit_code == 0, result.output
    assert f"label store {base}/l.zarr: OK" in result.output


def test_any_fsspec_url(stores: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.put(str(stores / "l.zarr"), "/plc-test/l.zarr", recursive=True)
    fs.put(str(stores / "d.zarr"), "/plc-test/d.zarr", recursive=True)
    try:
        labels = open_label_store("memory://plc-test/l.zarr")
        local = open_label_store(stores / "l.zarr")
        assert labels.read_codes("teacher", 2).tobytes() == local.read_codes("teacher", 2).tobytes()
        assert verify_store("memory://plc-test/d.zarr")["kind"] == "dataset"
        assert open_dataset_store("file://" + str(stores / "d.zarr")).path == stores / "d.zarr"
    finally:
        fs.rm("/plc-test", recursive=True)
    shutil.rmtree(stores / "d.zarr")
    with pytest.raises(StoreError, match=r"dataset store .*d.zarr does not exist"):
        open_dataset_store("file://" + str(stores / "d.zarr"))


def test_plc_verify_against_python_m_http_server(stores: Path) -> None:
    """Exactly the server a new user starts: ``python -m http.server`` in a subprocess
    (127.0.0.1, a free port, always killed), then ``plc verify URL`` as a command."""
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(stores)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "http.server did not start in 30 s"
                time.sleep(0.1)
        cmd = [sys.executable, "-c", "from stages.cli import app; app()", "verify",
               f"http://127.0.0.1:{port}/l.zarr"]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        server.kill()
        server.wait(timeout=30)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "ignores HTTP Range requests" in out and "unreadable" not in out
    assert "Traceback" not in out


def test_reads_ride_out_a_flaky_server(stores: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropped connections, 503s and truncated bodies are retried: every variant reads the
    same bytes as from the local copy, and faults of each kind did happen."""
    from http_helpers import FlakyHandler

    monkeypatch.setenv("PLC_HTTP_RETRY_SECONDS", "30")
    local = open_label_store(stores / "l.zarr")
    FlakyHandler.reset()
    with serve(stores, FlakyHandler) as base:
        remote = open_label_store(f"{base}/l.zarr")
        for v in VARS:
            for i in range(len(IDS)):  # image by image: many range requests
                np.testing.assert_array_equal(remote.read_codes(v, i), local.read_codes(v, i))
        assert verify_store(f"{base}/l.zarr")["kind"] == "labels"
    assert all(n > 0 for n in FlakyHandler.faults.values()), FlakyHandler.faults


def test_a_server_that_goes_down_fails_within_the_limit(stores: Path, monkeypatch) -> None:
    monkeypatch.setenv("PLC_HTTP_RETRY_SECONDS", "2")
    with serve(stores) as base:
        remote = open_label_store(f"{base}/l.zarr")
    start = time.monotonic()  # the server is gone now: reads retry for 2 s, then stop
    with pytest.raises(StoreError) as info:
        remote.read_codes(VARS[0], 0)
    assert time.monotonic() - start < 15
    message = str(info.value)
    assert message.startswith(f"cannot read {base}/l.zarr/") and "ClientConnectorError" in message
    assert "PLC_HTTP_RETRY_SECONDS (now 2)" in message and "corrupt" not in message


def test_a_chunk_corrupted_in_transit_is_read_again(stores: Path) -> None:
    """One response with a flipped bit fails its crc32c; the read is tried again and returns
    the stored bytes (a chunk corrupt on the server is still named: test_http_corrupt_...)."""
    from http_helpers import CorruptOnceHandler

    local = open_label_store(stores / "l.zarr")
    CorruptOnceHandler.flipped = False
    with serve(stores, CorruptOnceHandler) as base:
        remote = open_label_store(f"{base}/l.zarr")
        got = remote.read_codes(VARS[0], slice(None))
    assert CorruptOnceHandler.flipped
    np.testing.assert_array_equal(got, local.read_codes(VARS[0], slice(None)))
