"""stages.data: opening the stores a stage reads, from paths and from URLs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from http_helpers import serve
from loader_stores import make_stores

from stages.data import (
    StoreSplit,
    check_same_images,
    first_images,
    foreground_pixels,
    load_split,
    open_labels_with_data,
    open_store,
)
from storage_schema import StoreError, open_dataset_store, open_label_store

CPU = torch.device("cpu")


def test_stores_open_from_http_urls(tmp_path: Path) -> None:
    data_path, labels_path = make_stores(tmp_path)
    local_data, local_labels = open_labels_with_data(labels_path, data_path)
    with serve(tmp_path) as base:
        data, labels = open_labels_with_data(f"{base}/labels.zarr", f"{base}/data.zarr")
        assert labels.ids == local_labels.ids and data.ids() == local_data.ids()
        idx = np.arange(len(labels))
        want = local_labels.read_codes("plc", idx)
        assert labels.read_codes("plc", idx).tobytes() == want.tobytes()
        store = open_store(f"{base}/data.zarr")
        np.testing.assert_array_equal(
            store.read_images(slice(None)), local_data.read_images(slice(None))
        )
        with pytest.raises(StoreError, match=r"label store .*/nope.zarr was not found"):
            open_labels_with_data(f"{base}/nope.zarr", f"{base}/data.zarr")


def test_missing_local_stores_name_the_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"run `plc precompute` first"):
        open_labels_with_data(tmp_path / "labels.zarr", None)
    with pytest.raises(FileNotFoundError, match=r"run `plc prepare --dataset"):
        open_store(tmp_path / "data.zarr")


def _flip_chunk(array_dir: Path, shard: int, k: int, n_chunks: int) -> None:
    """Flip a bit in the first byte of chunk ``k`` of ``shard`` (sharding index at the end)."""
    file = next(f for f in (array_dir / "c" / str(shard)).rglob("*") if f.is_file())
    data = bytearray(file.read_bytes())
    index = np.frombuffer(bytes(data[-(16 * n_chunks + 4) : -4]), dtype="<u8").reshape(-1, 2)
    data[int(index[k, 0])] ^= 0x01  # (offset, nbytes) per chunk
    file.write_bytes(bytes(data))


@pytest.mark.parametrize("damaged", ["labels", "data"])
def test_inspect_refuses_a_corrupt_chunk_in_one_sentence(tmp_path: Path, damaged: str) -> None:
    from typer.testing import CliRunner

    from stages.cli import app

    data_path, labels_path = make_stores(tmp_path)
    store, labels = open_labels_with_data(labels_path, data_path)
    first = labels.ids[0]  # label position 0; the dataset store holds test images first
    if damaged == "labels":
        size = int(labels.attrs["shard_size"])
        _flip_chunk(labels_path / "soft" / "plc", 0, 0, size)
        where, key = f"label store {labels_path}", "soft/plc"
    else:
        size, j = int(store.attrs["shard_size"]), store.ids().index(first)
        _flip_chunk(data_path / "masks", j // size, j % size, min(size, len(store)))
        where, key = f"dataset store {data_path}", "masks"
    out = tmp_path / "panel.png"
    args = [
        "inspect",
        str(labels_path),
        "--image",
        first,
        "--out",
        str(out),
        "--data",
        str(data_path),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and not out.exists()
    assert f"{where}: array '{key}' cannot be read at image(s) '{first}'" in result.output


# ------------------------------------------- the streamed split (distill's evaluation)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_stores(tmp_path_factory.mktemp("data"), n_train=9, n_test=5)


def test_store_split_batches_equal_the_in_memory_split(stores) -> None:
    store = open_dataset_store(stores[0])
    lazy, held = StoreSplit(store, "test"), load_split(store, "test")
    assert len(lazy) == len(held) == 5 and lazy.ids == held.ids
    assert np.array_equal(lazy.indices, held.indices)
    for idx in (torch.tensor([4, 0, 2]), torch.arange(5)):
        for a, b in zip(lazy.batch(idx, CPU), held.batch(idx, CPU), strict=True):
            assert a.dtype == b.dtype and torch.equal(a, b)


def test_first_images_are_the_splits_first_as_networks_get_them(stores) -> None:
    store = open_dataset_store(stores[0])
    raw = store.read_images(store.indices("train")[:4])  # (4, H, W, 3) uint8
    want = torch.from_numpy(raw).permute(0, 3, 1, 2).double() / 255.0
    got = first_images(store, "train", 4, CPU)
    assert got.dtype == torch.float32 and torch.equal(got, want.float())  # x / 255 rounds once
    assert first_images(store, "train", 100, CPU).shape[0] == 9  # the whole split, no more


def test_evaluation_by_batch_equals_the_in_memory_split(stores) -> None:
    from pipeline.models.registry import build_model
    from stages.evaluate import evaluate_model

    torch.manual_seed(0)
    model = build_model("unet-tiny", num_classes=2, img_size=32)
    store = open_dataset_store(stores[0])
    lazy = evaluate_model(model, StoreSplit(store, "test"), 2, 2, CPU)
    held = evaluate_model(model, load_split(store, "test"), 2, 5, CPU)
    assert lazy["per_image"] == held["per_image"] and lazy["dice"] == held["dice"]


def test_foreground_pixels_streamed_equal_a_direct_count(stores) -> None:
    store = open_dataset_store(stores[0])
    idx = store.indices("train")
    direct = (store.read_masks(idx) > 0).reshape(len(idx), -1).sum(1)
    assert np.array_equal(foreground_pixels(store, idx, block=2), direct)
    assert direct.min() > 0


def test_a_label_store_of_other_images_is_refused(stores) -> None:
    store, labels = open_dataset_store(stores[0]), open_label_store(stores[1])
    check_same_images(store, labels, store.indices("train"))
    with pytest.raises(ValueError, match="lists other train images than the dataset store"):
        check_same_images(store, labels, store.indices("train")[::-1])


def test_an_empty_split_is_refused_naming_it(stores) -> None:
    with pytest.raises(ValueError, match="no images in split 'val'"):
        StoreSplit(open_dataset_store(stores[0]), "val")
