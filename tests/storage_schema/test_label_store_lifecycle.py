"""Label store lifecycle: overwrite, resume, concurrent writers, byte-identical output."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from label_helpers import IDS, VARS, N, create, shard_worker, soft_maps, write_all, write_shard
from store_helpers import tree_bytes

from storage_schema import StoreError, encode_logprobs, open_label_store, verify_store


def test_existing_store_refused_unless_overwrite(tmp_path: Path) -> None:
    path = write_all(tmp_path / "l.zarr", soft_maps(0))
    with pytest.raises(StoreError, match=r"l.zarr already exists; pass overwrite=True"):
        create(path)
    write_all(path, soft_maps(1), overwrite=True)
    codes = open_label_store(path).read_codes("plc", slice(None))
    np.testing.assert_array_equal(codes, encode_logprobs(soft_maps(1)["plc"], axis=1))
    assert [p.name for p in tmp_path.iterdir()] == ["l.zarr"]


def test_resume_skips_done_shards(tmp_path: Path) -> None:
    maps = soft_maps()
    path = tmp_path / "l.zarr"
    write_shard(create(path), 3, 6, maps)  # then the process "crashes"
    with pytest.raises(
        StoreError, match=r"cannot resume .*: its classes is \['background', 'lesion'\] but"
    ):
        create(path, resume=True, classes=["bg", "polyp"])
    with pytest.raises(
        StoreError, match=r"cannot resume .*: its shard_size is 3 but this run has 2"
    ):
        create(path, resume=True, shard_size=2)
    with pytest.raises(StoreError, match=r"ids differ .* from index 6 \('img6' vs 'x'\)"):
        create(path, resume=True, ids=[*IDS[:6], "x"])
    writer = create(path, resume=True)
    assert writer.pending_shards() == [(0, 3), (6, 7)]
    for a, b in writer.pending_shards():
        write_shard(writer, a, b, maps)
    store = open_label_store(writer.publish())
    np.testing.assert_array_equal(
        store.read_codes("teacher", slice(None)), encode_logprobs(maps["teacher"], axis=1)
    )
    write_shard(create(path, overwrite=True), 0, 3, maps)
    assert create(path, overwrite=True).pending_shards() == [
        (0, 3),
        (3, 6),
        (6, 7),
    ]  # no resume: fresh


def test_two_processes_write_different_shards(tmp_path: Path) -> None:
    writer = create(tmp_path / "l.zarr", shard_size=2)
    bounds = writer.shard_bounds()  # 4 shards, alternately owned by the two workers
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        jobs = [pool.submit(shard_worker, str(writer.tmp_path), bounds[k::2], 5) for k in range(2)]
        assert sum(j.result() for j in jobs) == len(bounds)
    store = open_label_store(writer.publish())
    maps = soft_maps(5)
    for v in VARS:
        np.testing.assert_array_equal(
            store.read_codes(v, slice(None)), encode_logprobs(maps[v], axis=1)
        )
    np.testing.assert_allclose(store.stat("dice"), np.arange(N) / 10)
    assert verify_store(store.path)["n_images"] == N


def test_identical_writes_are_byte_identical(tmp_path: Path) -> None:
    maps = soft_maps()
    a = tree_bytes(write_all(tmp_path / "a.zarr", maps))
    b = tree_bytes(write_all(tmp_path / "b.zarr", maps, order=lambda s: list(reversed(s))))
    assert a.keys() == b.keys() and any(k.startswith("soft/plc/c/") for k in a)
    assert a == b
