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
