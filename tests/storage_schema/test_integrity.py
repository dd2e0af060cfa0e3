"""crc32c on every chunk: random single-bit flips in shard files are all caught and named.

The oracle for "which image does a flip hit" is the shard index itself, parsed here from the
undamaged file (zarr's sharding format: at the end of the file, one little-endian (offset,
nbytes) uint64 pair per chunk in C order, then the index's own 4-byte crc32c). A flip inside
chunk k must name exactly image ``shard_start + k``; a flip in the index must name every
image of the shard.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import zarr
from label_helpers import IDS, SHARD, VARS, soft_maps, write_all
from store_helpers import CREATED

from storage_schema import StoreError, open_dataset_store, open_label_store, verify_store
from storage_schema.integrity import has_checksum

EMPTY = 2**64 - 1


def chunk_ranges(data: bytes, n_chunks: int) -> list[tuple[int, int] | None]:
    """Per chunk of a shard file: (start, stop) byte range, or None for an empty chunk."""
    index = np.frombuffer(data[-(16 * n_chunks + 4) : -4], dtype="<u8").reshape(n_chunks, 2)
    return [None if off == EMPTY else (int(off), int(off + nb)) for off, nb in index]


def expected_images(data: bytes, offset: int, first: int, n_chunks: int, n: int) -> set[int]:
    """Images a flip at ``offset`` damages (the whole shard for a flip in its index)."""
    for k, rng in enumerate(chunk_ranges(data, n_chunks)):
        if rng is not None and rng[0] <= offset < rng[1]:
            return {first + k}
    assert offset >= len(data) - (16 * n_chunks + 4), "byte outside every chunk and the index"
    return set(range(first, min(first + n_chunks, n)))


def named(problems: list[str], key: str, ids: list[str]) -> set[int]:
    """Image positions named by the verify problem lines about array ``key``."""
    lines = [p for p in problems if p.startswith(f"array '{key}':")]
    return {ids.index(m) for line in lines for m in re.findall(r"'([^']+)'", line.split(":", 2)[2])}


def flip(file: Path, offset: int, bit: int) -> bytes:
    data = file.read_bytes()
    damaged = bytearray(data)
    damaged[offset] ^= 1 << bit
    file.write_bytes(bytes(damaged))
    return data


def shard_files(path: Path, key: str) -> list[tuple[Path, int]]:
    """(shard file, index of its first image) for array ``key``, in image order."""
    files = sorted((path / key / "c").iterdir(), key=lambda p: int(p.name))
    out = []
    for p in files:
        leaves = [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else [p]
        assert len(leaves) == 1, leaves
        out.append((leaves[0], int(p.name)))
    return out


def test_every_array_carries_checksums(tmp_path: Path, make_dataset) -> None:
    labels = zarr.open_group(write_all(tmp_path / "l.zarr", soft_maps()), mode="r")
    data = zarr.open_group(make_dataset(tmp_path / "d.zarr"), mode="r")
    keys = ["ids", "done", "stats/dice", *(f"soft/{v}" for v in VARS)]
    assert all(has_checksum(labels[k]) for k in keys)
    assert all(has_checksum(data[k]) for k in ("images", "masks", "split"))


@pytest.fixture(params=["direct", "zarr"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both read paths: the direct shard reader (storage_schema.direct) and zarr alone."""
    if request.param == "zarr":
        from storage_schema.direct import DirectArray

        monkeypatch.setattr(DirectArray, "of", classmethod(lambda cls, arr, folder: None))
    return request.param


def test_label_shard_bit_flips_all_detected_and_named(tmp_path: Path, reader: str) -> None:
    path = write_all(tmp_path / "l.zarr", soft_maps())
    rng = np.random.default_rng(20261201)
    files = [(v, f, s) for v in VARS for f, s in shard_files(path, f"soft/{v}")]
    hits = {"chunk": 0, "index": 0}
    for _ in range(60):
        variant, file, shard = files[rng.integers(len(files))]
        data = file.read_bytes()
        offset, bit = int(rng.integers(len(data))), int(rng.integers(8))
        first = shard * SHARD
        expected = expected_images(data, offset, first, SHARD, len(IDS))
        hits["index" if len(expected) > 1 or offset >= len(data) - 52 else "chunk"] += 1
        flip(file, offset, bit)
        try:
            with pytest.raises(StoreError) as info:
                verify_store(path)
            assert named(info.value.problems, f"soft/{variant}", IDS) == expected
            assert "crc32c checksum mismatch" in str(info.value)
            image = min(expected)
            store = open_label_store(path)
            with pytest.raises(StoreError) as read_err:
                store.read_codes(variant, image)
            assert str(read_err.value).startswith(
                f"label store {path}: array 'soft/{variant}' cannot be read at image(s) "
                f"{IDS[image]!r}"
            )
            with pytest.raises(StoreError) as run_err:  # a run over every image names them
                store.read_codes(variant, slice(None))
            text = str(run_err.value).split("at image(s) ", 1)[1].split(":")[0]
            assert {IDS.index(m) for m in re.findall(r"'([^']+)'", text)} == expected
        finally:
            file.write_bytes(data)
    assert hits["chunk"] >= 10 and hits["index"] >= 10, hits  # both regions were exercised
    verify_store(path)  # restored: clean again


def test_dataset_shard_bit_flips_all_detected_and_named(
    tmp_path: Path, make_dataset, reader: str
) -> None:
    path = make_dataset(tmp_path / "d.zarr", shard_size=2)
    ids = open_dataset_store(path).ids()
    rng = np.random.default_rng(7)
    files = [(k, f, s) for k in ("images", "masks") for f, s in shard_files(path, k)]
    for _ in range(30):
        key, file, shard = files[rng.integers(len(files))]
        data = file.read_bytes()
        offset, bit = int(rng.integers(len(data))), int(rng.integers(8))
        expected = expected_images(data, offset, shard * 2, 2, len(ids))
        flip(file, offset, bit)
        try:
            with pytest.raises(StoreError) as info:
                verify_store(path)
            assert named(info.value.problems, key, ids) == expected
            store = open_dataset_store(path)
            read = store.read_images if key == "images" else store.read_masks
            with pytest.raises(StoreError, match=rf"array '{key}' cannot be read at image"):
                read(slice(None))
        finally:
            file.write_bytes(data)


def test_corrupt_small_arrays_named(tmp_path: Path) -> None:
    path = write_all(tmp_path / "l.zarr", soft_maps())
    file = path / "stats" / "dice" / "c" / "1"  # images 3..5
    data = flip(file, 3, 0)
    with pytest.raises(StoreError) as info:
        verify_store(path)
    assert named(info.value.problems, "stats/dice", IDS) == {3, 4, 5}
    with pytest.raises(StoreError, match=r"array 'stats/dice' cannot be read at image\(s\) 'img3'"):
        open_label_store(path).stat("dice")
    file.write_bytes(data)
    ids_file = path / "ids" / "c" / "0"
    flip(ids_file, 2, 5)
    with pytest.raises(StoreError, match=r"array 'ids' cannot be read"):
        open_label_store(path)
    with pytest.raises(StoreError, match=r"array 'ids': 7 image\(s\) unreadable"):
        verify_store(path)


def test_readers_of_good_stores_unchanged(tmp_path: Path, make_dataset, arrays) -> None:
    images, masks = arrays
    store = open_dataset_store(make_dataset(tmp_path / "d.zarr", shard_size=2))
    np.testing.assert_array_equal(store.read_images(slice(None)), images)
    np.testing.assert_array_equal(store.read_masks(np.array([4, 0])), masks[[4, 0]])
    np.testing.assert_array_equal(store.read_images(-1), images[-1])
    with pytest.raises(IndexError):
        store.read_masks(len(images))
    assert store.attrs["created"] == CREATED and store.attrs["shard_size"] == 2


def test_verify_cli_names_the_image_without_traceback(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from stages.cli import app

    path = write_all(tmp_path / "l.zarr", soft_maps())
    file, _ = shard_files(path, "soft/plc")[1]
    flip(file, 0, 0)  # first byte of chunk 0 of shard 1: image 3
    result = CliRunner().invoke(app, ["verify", str(path)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "array 'soft/plc': 1 image(s) unreadable (crc32c checksum mismatch" in result.output
    assert "'img3'" in result.output


def test_raw_array_views_of_a_dataset_store_are_checked(tmp_path: Path, make_dataset) -> None:
    """Stages that index ``store.images``/``store.masks`` directly get the same refusal."""
    path = make_dataset(tmp_path / "d.zarr", shard_size=2)
    store = open_dataset_store(path)
    ids = store.ids()
    file, _ = shard_files(path, "masks")[1]  # images 2 and 3
    chunks = chunk_ranges(file.read_bytes(), 2)
    flip(file, chunks[1][0], 3)  # first byte of image 3's chunk
    np.testing.assert_array_equal(store.masks[2], open_dataset_store(path).read_masks(2))
    sentence = rf"dataset store {re.escape(str(path))}: array 'masks' cannot be read at image\(s\) '{ids[3]}'"
    reads = [
        lambda: store.masks[3],
        lambda: store.masks[1:5],
        lambda: store.masks.get_orthogonal_selection((np.array([0, 3]),)),
        lambda: store.masks.oindex[np.array([3, 4])],
        lambda: np.asarray(store.masks),
        lambda: store.read_masks(np.array([3])),
    ]
    for read in reads:
        with pytest.raises(StoreError, match=sentence):
            read()
    assert store.masks.shape == (len(ids), *store.size) and store.masks.chunks[0] == 1


def test_batch_reads_by_runs_equal_zarr_orthogonal_selection(tmp_path: Path) -> None:
    """read_runs (slices of consecutive positions) returns what zarr's oindex returns."""
    from storage_schema.integrity import read_runs

    path = write_all(tmp_path / "l.zarr", soft_maps())
    arr = zarr.open_group(path, mode="r")["soft/plc"]
    rng = np.random.default_rng(3)
    cases = [np.array([0]), np.arange(len(IDS)), np.array([6, 0, 3, 3, 4, 5, 1])]
    cases += [rng.integers(0, len(IDS), int(rng.integers(1, 12))) for _ in range(20)]
    for idx in cases:
        np.testing.assert_array_equal(read_runs(arr, idx), arr.oindex[idx])
    store = open_label_store(path)
    np.testing.assert_array_equal(store.read_codes("plc", [5, 2, 2]), arr.oindex[[5, 2, 2]])
