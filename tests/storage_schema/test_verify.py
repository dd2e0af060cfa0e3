"""verify_store: a good store passes; a damaged one lists every problem in one error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from store_helpers import CLASSES, CREATED, log_softmax, sha

from storage_schema import StoreError, create_label_store, format_summary, verify_store

N, C, H, W = 5, 2, 4, 4


def make_labels(path: Path, publish: bool = True) -> Path:
    writer = create_label_store(
        path,
        ids=[f"img{i}" for i in range(N)],
        variants=["teacher", "plc"],
        classes=CLASSES,
        height=H,
        width=W,
        dataset_name="toy",
        manifest_sha256=sha("m"),
        stat_names=["dice", "false_pixels_plc"],
        shard_size=2,
        created=CREATED,
    )
    rng = np.random.default_rng(0)
    for a, b in writer.shard_bounds():
        logp = log_softmax(rng.normal(size=(b - a, C, H, W)), axis=1)  # (n, C, H, W)
        stats = {"dice": np.full(b - a, 0.9), "false_pixels_plc": np.zeros(b - a)}
        writer.write_shard(a, {"teacher": logp, "plc": logp}, stats)
    return writer.publish() if publish else writer.tmp_path


def test_good_dataset_store_passes(tmp_path: Path, make_dataset) -> None:
    path = make_dataset(tmp_path / "toy.zarr")
    summary = verify_store(path)
    assert summary["kind"] == "dataset" and summary["path"] == str(path)
    assert summary["n_images"] == 5 and summary["counts"] == {"train": 3, "val": 1, "test": 1}
    assert summary["classes"] == CLASSES and summary["bytes"] > 0
    text = format_summary(summary)
    assert text.splitlines()[0] == f"dataset store {path}: OK"
    assert "counts           train=3, val=1, test=1" in text
    assert f"manifest_sha256  {summary['manifest_sha256'][:12]}" in text


def test_damaged_dataset_lists_every_problem(tmp_path: Path, make_dataset, records) -> None:
    path = make_dataset(tmp_path / "toy.zarr")
    group = zarr.open_group(path, mode="r+")
    masks = group["masks"]
    masks[1, 0, 0] = 2  # class id out of range for 2 classes
    masks[3, 2, 2] = 9
    group.attrs["counts"] = {"train": 2, "val": 2, "test": 1}
    with pytest.raises(StoreError) as info:
        verify_store(path)
    assert info.value.problems == [
        "2 mask(s) hold class ids >= 2 (n classes), e.g. 'img001', 'img003' with max 2",
        "split counts are {'train': 3, 'val': 1, 'test': 1} but attrs record "
        "{'train': 2, 'val': 2, 'test': 1}",
    ]
    assert str(info.value).startswith(f"store {path} failed verification with 2 problem(s):")


def test_tampered_manifest_and_missing_array_reported(tmp_path: Path, make_dataset) -> None:
    path = make_dataset(tmp_path / "toy.zarr")
    table = pq.read_table(path / "manifest.parquet")
    pq.write_table(table.slice(0, 4), path / "manifest.parquet")
    del zarr.open_group(path, mode="r+")["images"]
    with pytest.raises(StoreError) as info:
        verify_store(path)
    text = str(info.value)
    assert "array 'images' is missing" in text
    assert "manifest.parquet hashes to" in text and "(changed after writing)" in text
    assert "manifest.parquet has 4 rows but the store holds 5 images" in text


def test_good_label_store_passes(tmp_path: Path) -> None:
    summary = verify_store(make_labels(tmp_path / "l.zarr"))
    assert summary["kind"] == "labels" and summary["status"] == "complete"
    assert summary["variants"] == ["teacher", "plc"] and summary["n_images"] == N
    assert summary["stats"]["dice"] == {"mean": pytest.approx(0.9), "n_finite": N}
    text = format_summary(summary)
    assert (
        text.splitlines()[0].startswith("label store ") and "variants         teacher, plc" in text
    )


def test_damaged_label_store_lists_every_problem(tmp_path: Path) -> None:
    path = make_labels(tmp_path / "l.zarr")
    group = zarr.open_group(path, mode="r+")
    group["done"][3] = False
    group["stats/dice"][1] = np.nan
    group["soft/plc"][4] = np.zeros((C, H, W), dtype=np.int8)  # not a distribution
    group["soft/teacher"][0, 0, 0, 0] = 5  # positive code
    with pytest.raises(StoreError) as info:
        verify_store(path)
    assert info.value.problems == [
        "1 of 5 image(s) not marked done: 'img3'",
        "variant 'teacher': 1 image(s) with codes > 0: 'img0'",
        "variant 'plc': 1 image(s) with pixels that decode to no valid class distribution "
        "(unwritten or zeroed): 'img4'",
        "statistic 'dice': 1 image(s) not finite: 'img1'",
    ]


def test_unfinished_label_store_reported(tmp_path: Path) -> None:
    tmp = make_labels(tmp_path / "l.zarr", publish=False)
    with pytest.raises(StoreError, match=r"status is 'writing', not 'complete'"):
        verify_store(tmp)


def test_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"store .*nothing does not exist"):
        verify_store(tmp_path / "nothing")
    zarr.open_group(tmp_path / "g.zarr", mode="w")
    with pytest.raises(StoreError, match=r"g.zarr is not a plc-kd store \(schema None; known: "):
        verify_store(tmp_path / "g.zarr")
