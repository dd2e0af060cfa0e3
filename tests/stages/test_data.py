"""stages.data: opening the stores a stage reads, from paths and from URLs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from http_helpers import serve
from loader_stores import make_stores

from stages.data import open_labels_with_data, open_store
from storage_schema import StoreError


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
