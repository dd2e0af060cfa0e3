"""The direct shard reader returns zarr's bytes for every run, leaves to zarr what it cannot
read, and keeps a bounded, self-refreshing cache of shard indexes. (Corruption under both
read paths: test_integrity.py's bit-flip tests, parametrised by reader.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from label_helpers import VARS, soft_maps, write_all

from storage_schema import direct, open_label_store
from storage_schema.direct import DirectArray, Fallback
from storage_schema.integrity import codecs, read_checked


def _array(path: Path, n: int, shard: int, chunk: int, *, compress: bool = True) -> np.ndarray:
    data = np.random.default_rng(n * 100 + chunk).integers(-128, 127, (n, 2, 6, 5), dtype=np.int8)
    data[3] = 0  # an all-zero image compresses to almost nothing
    arr = zarr.create_array(str(path), shape=data.shape, dtype="int8", chunks=(chunk, 2, 6, 5),
                            shards=(shard, 2, 6, 5), compressors=codecs(compress), fill_value=0,
                            config={"write_empty_chunks": True})  # fmt: skip
    arr[:] = data
    return data


@pytest.mark.parametrize(
    ("n", "shard", "chunk", "compress"),
    [(23, 8, 1, True), (23, 8, 4, True), (30, 12, 3, False), (5, 8, 8, True)],
)
def test_every_run_reads_zarrs_bytes(tmp_path, n, shard, chunk, compress) -> None:
    data = _array(tmp_path / "a", n, shard, chunk, compress=compress)
    arr = zarr.open_array(str(tmp_path / "a"), mode="r")
    reader = DirectArray.of(arr, tmp_path / "a")
    assert reader is not None
    rng = np.random.default_rng(1)
    runs = [(0, n), (n - 1, n), (0, 0)] + [
        tuple(sorted(rng.integers(0, n + 1, 2))) for _ in range(40)
    ]
    for a, b in runs:
        got = reader.read(a, b)
        assert got.dtype == np.int8 and got.shape == (b - a, 2, 6, 5)
        assert np.array_equal(got, data[a:b]), (a, b)
        assert np.array_equal(got, arr[a:b])
    with pytest.raises(IndexError):
        reader.read(0, n + 1)


def test_layouts_it_does_not_handle_are_left_to_zarr(tmp_path) -> None:
    plain = zarr.create_array(str(tmp_path / "plain"), shape=(4, 3), dtype="int8", chunks=(1, 3))
    wide = zarr.create_array(str(tmp_path / "wide"), shape=(4, 3), dtype="float32", chunks=(1, 3),
                             shards=(2, 3), compressors=codecs())  # fmt: skip
    part = zarr.create_array(str(tmp_path / "part"), shape=(4, 6), dtype="int8", chunks=(1, 3),
                             shards=(2, 6), compressors=codecs())  # fmt: skip
    _array(tmp_path / "ok", 4, 2, 1)
    ok = zarr.open_array(str(tmp_path / "ok"), mode="r")
    assert DirectArray.of(plain, tmp_path / "plain") is None  # not sharded
    assert DirectArray.of(wide, tmp_path / "wide") is None  # 4-byte values
    assert DirectArray.of(part, tmp_path / "part") is None  # a chunk is part of an image
    assert DirectArray.of(ok, None) is None  # a URL: no local folder
    assert DirectArray.of(ok, tmp_path / "missing") is None


def test_a_missing_shard_falls_back_to_zarrs_fill_value(tmp_path) -> None:
    data = _array(tmp_path / "a", 16, 8, 2)
    shard1 = tmp_path / "a" / "c" / "1" / "0" / "0" / "0"
    shard1.unlink()
    arr = zarr.open_array(str(tmp_path / "a"), mode="r")
    reader = DirectArray.of(arr, tmp_path / "a")
    assert np.array_equal(reader.read(0, 8), data[:8])
    with pytest.raises(Fallback):
        reader.read(6, 10)
    got = read_checked(arr, "a", slice(6, 10), what="test", ids=[], direct=reader)
    assert np.array_equal(got[:2], data[6:8]) and not got[2:].any()  # zarr: fill value 0


def test_the_index_cache_is_bounded_and_follows_a_rewritten_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(direct, "INDEX_CACHE", 2)
    _array(tmp_path / "a", 32, 4, 1)
    arr = zarr.open_array(str(tmp_path / "a"), mode="r")
    reader = DirectArray.of(arr, tmp_path / "a")
    reader.read(0, 32)  # 8 shards
    assert len(reader._indexes) == 2
    new = np.full((4, 2, 6, 5), 7, dtype=np.int8)
    zarr.open_array(str(tmp_path / "a"), mode="r+")[28:32] = new  # shard 7 rewritten
    assert np.array_equal(reader.read(28, 32), new)


def test_a_local_label_store_reads_runs_directly(tmp_path) -> None:
    path = write_all(tmp_path / "l.zarr", soft_maps())
    store = open_label_store(path)
    codes = store.read_codes(VARS[0], slice(1, 5))
    assert isinstance(store._direct[f"soft/{VARS[0]}"], DirectArray)
    raw = zarr.open_array(str(path / "soft" / VARS[0]), mode="r")
    assert np.array_equal(codes, raw[1:5])
    assert np.array_equal(store.read_codes(VARS[0], 2), raw[2])


def test_frame_sizes_are_read_from_the_zstd_header() -> None:
    import numcodecs.zstd

    from storage_schema.direct import frame_content_size

    for n in (0, 1, 255, 256, 257, 65791, 65792, 3 * 224 * 224):  # 1-, 2- and 4-byte fields
        frame = np.frombuffer(numcodecs.zstd.compress(bytes(n), 3), dtype=np.uint8)
        assert frame_content_size(frame) == n
    assert frame_content_size(np.frombuffer(b"not a zstd frame", dtype=np.uint8)) is None


def test_a_checksummed_chunk_of_the_wrong_size_is_refused_not_zero_padded(tmp_path) -> None:
    """A frame that passes its crc32c but holds fewer bytes than the chunk (another writer's
    layout) is an error, never a partly filled image."""
    import google_crc32c
    import numcodecs.zstd

    _array(tmp_path / "a", 8, 4, 1)
    reader = DirectArray.of(zarr.open_array(str(tmp_path / "a"), mode="r"), tmp_path / "a")
    short = numcodecs.zstd.compress(bytes(2 * 6 * 5 - 1), 3)
    raw = np.frombuffer(short + google_crc32c.value(short).to_bytes(4, "little"), np.uint8)
    dest = np.full((1, 2, 6, 5), 9, dtype=np.int8)
    images, why = reader._decode(raw, dest)
    assert images is None and why == "a chunk of 59 bytes, expected 60"
    good = numcodecs.zstd.compress(bytes(range(60)), 3)
    raw = np.frombuffer(good + google_crc32c.value(good).to_bytes(4, "little"), np.uint8)
    images, why = reader._decode(raw, dest)
    assert why == "" and images is dest and dest.ravel().tolist() == list(range(60))
