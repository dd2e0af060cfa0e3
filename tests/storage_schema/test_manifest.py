"""Manifest building, validation messages and the content hash."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from store_helpers import make_record

from storage_schema import MANIFEST_SCHEMA, StoreError, build_manifest, manifest_sha256


def test_schema_fields_and_nullability() -> None:
    assert MANIFEST_SCHEMA.names == [
        "id", "split", "image_path", "mask_path", "orig_height", "orig_width",
        "image_sha256", "mask_sha256", "fg_fraction", "empty_mask", "flags",
    ]  # fmt: skip
    nullable = {f.name for f in MANIFEST_SCHEMA if f.nullable}
    assert nullable == {"mask_path", "mask_sha256"}
    assert MANIFEST_SCHEMA.field("orig_height").type == pa.int32()
    assert MANIFEST_SCHEMA.field("fg_fraction").type == pa.float32()


def test_build_manifest(records: list[dict]) -> None:
    table = build_manifest(records)
    assert table.schema.equals(MANIFEST_SCHEMA)
    assert table.num_rows == 5
    assert table.column("id").to_pylist() == ["img000", "img001", "img002", "img003", "img004"]
    assert table.column("split").to_pylist() == ["train", "train", "val", "test", "train"]


def test_mask_may_be_absent() -> None:
    rec = make_record(0) | {"mask_path": None, "mask_sha256": None}
    assert build_manifest([rec]).column("mask_path").to_pylist() == [None]


def test_every_bad_field_is_listed() -> None:
    bad = [
        make_record(0) | {"split": "training", "orig_height": 0},
        make_record(1),
        make_record(2) | {"image_sha256": "XYZ", "fg_fraction": 1.5, "image_path": "/abs/x.png"},
        make_record(3) | {"mask_sha256": None},
    ]
    with pytest.raises(StoreError) as info:
        build_manifest(bad)
    text = str(info.value)
    assert text.startswith("manifest has 6 problem(s); fix the records:")
    assert (
        "record 0 (id 'img000'): field 'split' must be one of train, val, test, got 'training'"
        in text
    )
    assert "record 0 (id 'img000'): field 'orig_height' must be a positive int, got 0" in text
    assert "record 2 (id 'img002'): field 'image_path' must be a POSIX path relative" in text
    assert "record 2 (id 'img002'): field 'image_sha256' must be a lowercase 64-digit hex" in text
    assert "record 2 (id 'img002'): field 'fg_fraction' must be a float in [0, 1], got 1.5" in text
    assert "record 3 (id 'img003'): fields 'mask_path' and 'mask_sha256' must be both set" in text
    assert "record 1" not in text
    assert len(info.value.problems) == 6


def test_missing_unknown_and_duplicate_fields() -> None:
    rec = make_record(0)
    del rec["flags"]
    rec["extra"] = 1
    with pytest.raises(StoreError) as info:
        build_manifest([rec, make_record(1), make_record(1), "not a dict"])
    assert info.value.problems == [
        "record 0 (id 'img000'): field 'flags' is missing",
        "record 0 (id 'img000'): field 'extra' is not in the manifest schema",
        "record 2 (id 'img001'): field 'id' duplicates record 1",
        "record 3: must be a dict, got str",
    ]


def test_type_checks() -> None:
    rec = make_record(0) | {"empty_mask": 1, "orig_width": 3.0, "flags": None}
    with pytest.raises(StoreError) as info:
        build_manifest([rec])
    assert len(info.value.problems) == 3
    assert "field 'empty_mask' must be a bool, got 1" in str(info.value)
    assert "field 'orig_width' must be a positive int, got 3.0" in str(info.value)
    empty = make_record(1) | {"empty_mask": True, "fg_fraction": 0.5}
    with pytest.raises(StoreError, match="'empty_mask' is True but 'fg_fraction' is not 0"):
        build_manifest([empty])


def test_hash_is_deterministic_and_content_sensitive(records: list[dict], tmp_path) -> None:
    table = build_manifest(records)
    digest = manifest_sha256(table)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert manifest_sha256(build_manifest(records)) == digest
    chunked = pa.concat_tables([table.slice(0, 2), table.slice(2)])
    assert chunked.column("id").num_chunks == 2
    assert manifest_sha256(chunked) == digest
    reordered = table.select(list(reversed(table.column_names)))
    assert manifest_sha256(reordered) == digest
    pq.write_table(table, tmp_path / "m.parquet")
    assert manifest_sha256(pq.read_table(tmp_path / "m.parquet")) == digest
    changed = [*records[:-1], records[-1] | {"flags": "x"}]
    assert manifest_sha256(build_manifest(changed)) != digest


def test_hash_matches_an_independent_oracle(records: list[dict]) -> None:
    table = build_manifest(records[:1])
    h = hashlib.sha256()
    h.update(
        json.dumps([[f.name, str(f.type)] for f in MANIFEST_SCHEMA], separators=(",", ":")).encode()
    )
    for name in MANIFEST_SCHEMA.names:
        h.update(json.dumps([name, table.column(name).to_pylist()], separators=(",", ":")).encode())
    assert manifest_sha256(table) == h.hexdigest()


def test_hash_refuses_a_table_missing_columns(records: list[dict]) -> None:
    table = build_manifest(records).drop_columns(["flags", "split"])
    with pytest.raises(StoreError, match=r"manifest lacks column\(s\) split, flags; rebuild it"):
        manifest_sha256(table)
