"""Prepared dataset store: write, open, validation refusals, atomic publish, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from store_helpers import CLASSES, CREATED, H, N, W, tree_bytes

import storage_schema.dataset_store as ds_mod
from storage_schema import (
    DATASET_SCHEMA,
    DATASET_SCHEMA_VERSION,
    StoreError,
    build_manifest,
    manifest_sha256,
    open_dataset_store,
)


def test_write_then_open_round_trip(tmp_path: Path, make_dataset, arrays, records) -> None:
    path = make_dataset(tmp_path / "toy.zarr")
    store = open_dataset_store(path)
    images, masks = arrays
    np.testing.assert_array_equal(store.images[:], images)
    np.testing.assert_array_equal(store.masks[:], masks)
    assert store.split.tolist() == ["train", "train", "val", "test", "train"]
    assert store.ids() == [r["id"] for r in records]
    assert store.indices("train").tolist() == [0, 1, 4]
    assert store.indices("train").dtype == np.int64
    assert store.indices("test").tolist() == [3]
    assert (len(store), store.size, store.classes, store.name) == (N, (H, W), CLASSES, "toy")
    assert store.manifest.equals(build_manifest(records))
    assert store.manifest_sha256 == manifest_sha256(build_manifest(records))
    assert (path / "manifest.parquet").is_file()


def test_attrs_and_layout(tmp_path: Path, make_dataset) -> None:
    store = open_dataset_store(make_dataset(tmp_path / "toy.zarr"))
    a = store.attrs
    assert (a["schema"], a["schema_version"]) == (DATASET_SCHEMA, DATASET_SCHEMA_VERSION)
    assert a["size"] == [H, W] and a["n_images"] == N and a["classes"] == CLASSES
    assert a["counts"] == {"train": 3, "val": 1, "test": 1}
    assert a["source"] == {"reader": "synthetic", "seed": 0}
    assert a["created"] == CREATED and a["package"] == "plc-kd"
    assert a["manifest_sha256"] == store.manifest_sha256
    assert store.images.chunks == (1, H, W, 3) and store.masks.chunks == (1, H, W)
    assert store.images.shards == (N, H, W, 3) and store.masks.shards == (N, H, W)  # N < 64
    names = [type(x).__name__ for x in store.images.compressors]
    assert names == ["ZstdCodec", "Crc32cCodec"]
    assert store.images.metadata.dimension_names == ("image", "y", "x", "channel")
    assert store.masks.metadata.dimension_names == ("image", "y", "x")


def test_created_defaults_to_now(tmp_path: Path, make_dataset) -> None:
    store = open_dataset_store(make_dataset(tmp_path / "toy.zarr", created=None))
    assert store.attrs["created"].startswith(("20", "21")) and "T" in store.attrs["created"]


def test_unknown_split_lists_choices(tmp_path: Path, make_dataset) -> None:
    store = open_dataset_store(make_dataset(tmp_path / "toy.zarr"))
    with pytest.raises(
        StoreError, match=r"unknown split 'training' .* choose one of train, val, test"
    ):
        store.indices("training")


def test_existing_path_refused_unless_overwrite(tmp_path: Path, make_dataset, arrays) -> None:
    path = make_dataset(tmp_path / "toy.zarr")
    with pytest.raises(StoreError, match=r"toy.zarr already exists; pass overwrite=True"):
        make_dataset(path)
    brighter = np.full_like(arrays[0], 7)
    make_dataset(path, images=brighter, overwrite=True)
    assert (open_dataset_store(path).images[:] == 7).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.zarr"]


def test_failure_mid_write_leaves_nothing(tmp_path: Path, make_dataset, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ds_mod.pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        make_dataset(tmp_path / "toy.zarr")
    assert list(tmp_path.iterdir()) == []


def test_failure_during_overwrite_keeps_the_old_store(
    tmp_path: Path, make_dataset, monkeypatch
) -> None:
    path = make_dataset(tmp_path / "toy.zarr")
    before = tree_bytes(path)
    monkeypatch.setattr(
        ds_mod.pq, "write_table", lambda *a, **k: (_ for _ in ()).throw(OSError("x"))
    )
    with pytest.raises(OSError):
        make_dataset(path, overwrite=True)
    assert tree_bytes(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["toy.zarr"]


def test_input_validation(tmp_path: Path, make_dataset, arrays, records) -> None:
    images, masks = arrays
    with pytest.raises(StoreError, match=r"masks hold class id 2 but only 2 classes are named"):
        make_dataset(tmp_path / "a.zarr", masks=masks * 2)
    with pytest.raises(
        StoreError, match=r"images must be a uint8 array \(N, H, W, 3\), got float32"
    ):
        make_dataset(tmp_path / "a.zarr", images=images.astype(np.float32))
    with pytest.raises(StoreError, match=r"masks must be a uint8 array of shape \(5, 6, 7\)"):
        make_dataset(tmp_path / "a.zarr", masks=masks[:, :-1])
    with pytest.raises(StoreError, match=r"manifest has 4 rows but images has 5"):
        make_dataset(tmp_path / "a.zarr", manifest=build_manifest(records[:4]))
    with pytest.raises(StoreError, match=r"classes must be a list of at least 2 distinct"):
        make_dataset(tmp_path / "a.zarr", classes=["bg", "bg"])
    with pytest.raises(StoreError, match=r"source must be JSON-serialisable"):
        make_dataset(tmp_path / "a.zarr", source={"f": object()})
    assert list(tmp_path.iterdir()) == []


def test_wrong_schema_version_refused(tmp_path: Path, make_dataset) -> None:
    path = make_dataset(tmp_path / "toy.zarr")
    zarr.open_group(path, mode="r+").attrs["schema_version"] = 1
    with pytest.raises(StoreError) as info:
        open_dataset_store(path)
    assert str(info.value) == (
        f"dataset store {path} has schema version 1 but this code reads version 2 (version 2 "
        "added sharding and crc32c checksums); rebuild it with `plc prepare --overwrite`."
    )


def test_other_store_and_missing_path_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"dataset store .*nope.zarr does not exist"):
        open_dataset_store(tmp_path / "nope.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match=r"plain is not a Zarr v3 store \(no zarr.json\)"):
        open_dataset_store(tmp_path / "plain")
    zarr.open_group(tmp_path / "other.zarr", mode="w").attrs["schema"] = "plc-kd/labels"
    with pytest.raises(
        StoreError, match=r"other.zarr is not a plc-kd dataset store \(schema 'plc-kd/labels'"
    ):
        open_dataset_store(tmp_path / "other.zarr")


def test_tampered_manifest_refused(tmp_path: Path, make_dataset, records) -> None:
    path = make_dataset(tmp_path / "toy.zarr")
    original = manifest_sha256(build_manifest(records))
    tampered = [records[0] | {"split": "test"}, *records[1:]]
    pq.write_table(build_manifest(tampered), path / "manifest.parquet")
    with pytest.raises(StoreError) as info:
        open_dataset_store(path)
    new = manifest_sha256(build_manifest(tampered))
    assert f"hashes to {new[:12]} but the store records {original[:12]}" in str(info.value)


def test_missing_manifest_or_array_refused(tmp_path: Path, make_dataset) -> None:
    path = make_dataset(tmp_path / "toy.zarr")
    (path / "manifest.parquet").unlink()
    with pytest.raises(StoreError, match=r"toy.zarr has no manifest.parquet; rebuild it"):
        open_dataset_store(path)
    path2 = make_dataset(tmp_path / "toy2.zarr")
    del zarr.open_group(path2, mode="r+")["masks"]
    with pytest.raises(StoreError, match=r"toy2.zarr has no array 'masks'"):
        open_dataset_store(path2)


def test_two_identical_writes_are_byte_identical(tmp_path: Path, make_dataset) -> None:
    a = tree_bytes(make_dataset(tmp_path / "a.zarr"))
    b = tree_bytes(make_dataset(tmp_path / "b.zarr"))
    assert a.keys() == b.keys() and len(a) > 5
    assert a == b
