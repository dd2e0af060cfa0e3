"""Label store: create, shard writes, publish, read back, and every refusal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from label_helpers import (
    IDS,
    MANIFEST,
    SHARD,
    VARS,
    C,
    H,
    N,
    W,
    create,
    soft_maps,
    write_all,
    write_shard,
)
from store_helpers import CLASSES, sha

from storage_schema import (
    LABEL_SCHEMA,
    LabelStoreWriter,
    StoreError,
    decode_logprobs,
    encode_logprobs,
    open_label_store,
)


def test_storage_schema_knows_no_variant_names() -> None:
    import storage_schema

    assert not hasattr(storage_schema, "VARIANTS")  # the table lives in pipeline.variants


def test_create_write_publish_read(tmp_path: Path) -> None:
    maps = soft_maps()
    path = tmp_path / "labels.zarr"
    writer = create(path)
    assert writer.path == path and writer.tmp_path == tmp_path / "labels.zarr.writing"
    assert writer.shard_bounds() == [(0, 3), (3, 6), (6, 7)]
    assert writer.pending_shards() == writer.shard_bounds()
    assert zarr.open_group(writer.tmp_path, mode="r").attrs["status"] == "writing"
    for a, b in writer.shard_bounds():
        write_shard(writer, a, b, maps)
    assert writer.pending_shards() == [] and not path.exists()
    assert writer.publish() == path
    assert not writer.tmp_path.exists()

    store = open_label_store(path, manifest_sha256=MANIFEST)
    assert (len(store), store.ids, store.variants, store.classes) == (N, IDS, VARS, CLASSES)
    assert (store.size, store.dataset_name, store.manifest_sha256) == ((H, W), "toy", MANIFEST)
    assert store.provenance == {"teacher": {"sha256": sha("t"), "config": {"depth": 2}}}
    assert store.attrs["schema"] == LABEL_SCHEMA and store.attrs["status"] == "complete"
    assert store.attrs["encoding"] == {"kind": "int8-logprob", "scale": 8}
    expected = encode_logprobs(maps["plc"], axis=1)
    np.testing.assert_array_equal(store.read_codes("plc", slice(None)), expected)
    np.testing.assert_array_equal(store.read_codes("plc", 4), expected[4])
    np.testing.assert_array_equal(store.read_codes("plc", np.int64(4)), expected[4])
    np.testing.assert_array_equal(store.read_codes("plc", -1), expected[-1])
    np.testing.assert_array_equal(
        store.read_codes("plc", np.array([5, 0, 5, -2])), expected[[5, 0, 5, -2]]
    )
    mask = np.zeros(N, dtype=bool)
    mask[[1, 6]] = True
    np.testing.assert_array_equal(store.read_codes("plc", mask), expected[[1, 6]])
    assert store.read_codes("plc", np.array([], dtype=int)).shape == (0, C, H, W)
    decoded = store.read("teacher", 2)
    assert decoded.dtype == np.float32 and decoded.shape == (C, H, W)
    np.testing.assert_allclose(decoded, maps["teacher"][2], atol=0.2)
    np.testing.assert_array_equal(
        decoded, decode_logprobs(encode_logprobs(maps["teacher"][2:3], axis=1))[0]
    )
    np.testing.assert_allclose(store.stat("dice"), np.arange(N) / 10)
    assert store.stat_names() == ["dice"] and store.index_of("img3") == 3


def test_array_layout(tmp_path: Path) -> None:
    writer = create(tmp_path / "l.zarr")
    group = zarr.open_group(writer.tmp_path, mode="r")
    soft = group["soft/teacher"]
    assert soft.dtype == np.int8 and soft.shape == (N, C, H, W)
    assert soft.chunks == (1, C, H, W) and soft.shards == (SHARD, C, H, W)
    assert type(soft.compressors[0]).__name__ == "ZstdCodec"
    assert group["done"].chunks == (SHARD,) and group["stats/dice"].dtype == np.float64
    assert np.isnan(group["stats/dice"][:]).all() and not group["done"][:].any()
    assert group["ids"][:].tolist() == IDS


def test_int8_codes_are_written_as_is(tmp_path: Path) -> None:
    writer = create(tmp_path / "l.zarr", shard_size=N, variants=("plc",), stat_names=())
    codes = np.full((N, C, H, W), -3, dtype=np.int8)
    writer.write_shard(0, {"plc": codes})
    np.testing.assert_array_equal(
        open_label_store(writer.publish()).read_codes("plc", slice(None)), codes
    )


def test_write_must_be_whole_shards(tmp_path: Path) -> None:
    maps = soft_maps()
    writer = create(tmp_path / "l.zarr")
    with pytest.raises(StoreError, match=r"writes must be whole shards: images \[1, 4\)"):
        writer.write_shard(1, {v: m[1:4] for v, m in maps.items()})
    with pytest.raises(StoreError, match=r"writes must be whole shards: images \[3, 5\)"):
        writer.write_shard(3, {v: m[3:5] for v, m in maps.items()})
    assert writer.pending_shards() == writer.shard_bounds()
    assert not zarr.open_group(writer.tmp_path, mode="r")["done"][:].any()


def test_write_validates_variants_shapes_and_stats(tmp_path: Path) -> None:
    maps = soft_maps()
    writer = create(tmp_path / "l.zarr")
    with pytest.raises(
        StoreError, match=r"exactly the store's variants teacher, plc; missing \['plc'\]"
    ):
        writer.write_shard(0, {"teacher": maps["teacher"][:3]})
    with pytest.raises(StoreError, match=r"unknown \['teacher_sc'\]"):
        writer.write_shard(
            0, {**{v: m[:3] for v, m in maps.items()}, "teacher_sc": maps["plc"][:3]}
        )
    with pytest.raises(StoreError, match=r"soft\['plc'\] must have shape \(3, 2, 5, 4\)"):
        writer.write_shard(0, {"teacher": maps["teacher"][:3], "plc": maps["plc"][:3, :, :4]})
    with pytest.raises(StoreError, match=r"must be float log-probs or int8 codes, got dtype int32"):
        writer.write_shard(
            0, {"teacher": maps["teacher"][:3], "plc": np.zeros((3, C, H, W), np.int32)}
        )
    with pytest.raises(StoreError, match=r"unknown statistic\(s\) \['iou'\]; this store has: dice"):
        writer.write_shard(0, {v: m[:3] for v, m in maps.items()}, {"iou": np.zeros(3)})
    assert writer.pending_shards() == writer.shard_bounds()


def test_publish_with_missing_shards_refused(tmp_path: Path) -> None:
    maps = soft_maps()
    writer = create(tmp_path / "l.zarr")
    write_shard(writer, 3, 6, maps)
    with pytest.raises(StoreError) as info:
        writer.publish()
    assert "4 of 7 images are not written (first: 'img0', 'img1', 'img2', 'img6')" in str(
        info.value
    )
    assert writer.pending_shards() == [(0, 3), (6, 7)]
    assert not (tmp_path / "l.zarr").exists()


def test_open_of_unfinished_store_refused(tmp_path: Path) -> None:
    writer = create(tmp_path / "l.zarr")
    with pytest.raises(
        StoreError, match=r"l.zarr was not finished \(status 'writing'.*rerun `plc precompute`"
    ):
        open_label_store(tmp_path / "l.zarr")
    writer.tmp_path.rename(tmp_path / "moved.zarr")
    with pytest.raises(StoreError) as info:
        open_label_store(tmp_path / "moved.zarr")
    assert str(info.value) == (
        f"label store {tmp_path / 'moved.zarr'} was not finished (status 'writing'); "
        "rerun `plc precompute`."
    )


def test_manifest_mismatch_names_both_hashes(tmp_path: Path) -> None:
    path = write_all(tmp_path / "l.zarr", soft_maps())
    other = sha("other manifest")
    with pytest.raises(StoreError) as info:
        open_label_store(path, manifest_sha256=other)
    assert str(info.value) == (
        f"label store {path} was built for manifest {MANIFEST[:12]} "
        f"but the dataset has {other[:12]}; rerun `plc precompute` for this dataset."
    )


def test_other_refusals(tmp_path: Path) -> None:
    path = write_all(tmp_path / "l.zarr", soft_maps())
    store = open_label_store(path)
    with pytest.raises(
        StoreError, match=r"variant 'teacher_fa' is not in .*; choose one of teacher, plc"
    ):
        store.read("teacher_fa", 0)
    with pytest.raises(StoreError, match=r"statistic 'iou' is not in .*; choose one of: dice"):
        store.stat("iou")
    with pytest.raises(StoreError, match=r"image id 'zzz' is not in label store"):
        store.index_of("zzz")
    with pytest.raises(IndexError):
        store.read_codes("plc", np.array([N]))
    zarr.open_group(path, mode="r+").attrs["schema_version"] = 0
    with pytest.raises(
        StoreError,
        match=r"has schema version 0 but this code reads version 2 \(version 2 added crc32c checksums\); rerun",
    ):
        open_label_store(path)
    with pytest.raises(StoreError, match=r"label store .*missing.zarr does not exist"):
        open_label_store(tmp_path / "missing.zarr")
    zarr.open_group(tmp_path / "ds.zarr", mode="w").attrs["schema"] = "plc-kd/dataset"
    with pytest.raises(
        StoreError, match=r"ds.zarr is not a plc-kd label store \(schema 'plc-kd/dataset'"
    ):
        open_label_store(tmp_path / "ds.zarr")
    with pytest.raises(StoreError, match=r"must end in '.writing'"):
        LabelStoreWriter.open(path)


def test_create_validation(tmp_path: Path) -> None:
    with pytest.raises(
        StoreError, match=r"variants must be a non-empty list of distinct names, got \['a', 'a'\]"
    ):
        create(tmp_path / "l.zarr", variants=["a", "a"])
    with pytest.raises(StoreError, match=r"variants entry must be a non-empty name"):
        create(tmp_path / "l.zarr", variants=["no/slash"])
    with pytest.raises(StoreError, match=r"ids must be unique, but 'a' appears more than once"):
        create(tmp_path / "l.zarr", ids=["a", "b", "a"])
    with pytest.raises(StoreError, match=r"shard_size must be a positive int, got 0"):
        create(tmp_path / "l.zarr", shard_size=0)
    with pytest.raises(StoreError, match=r"manifest_sha256 must be a lowercase 64-digit hex"):
        create(tmp_path / "l.zarr", manifest_sha256="abc")
    assert list(tmp_path.iterdir()) == []
