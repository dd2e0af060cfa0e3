"""Reading a store without plc: xarray, dask and the snippets of docs/store.md, run as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from label_helpers import IDS, VARS, soft_maps, write_all

from storage_schema import decode_logprobs, open_dataset_store, open_label_store

DOC = Path(__file__).resolve().parents[2] / "docs" / "store.md"
SECTION = "### Reading a store without plc"


def readme_snippets() -> list[str]:
    """The ```python blocks of the docs/store.md section, in order."""
    text = DOC.read_text()
    start = text.index(SECTION)
    end = re.search(r"^#{1,3} ", text[start + len(SECTION) :], flags=re.M)
    body = text[start : start + len(SECTION) + (end.start() if end else len(text))]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


@pytest.fixture
def site(tmp_path: Path, make_dataset, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with labels/synthetic.zarr and data/synthetic.zarr."""
    write_all(tmp_path / "labels" / "synthetic.zarr", soft_maps())
    make_dataset(tmp_path / "data" / "synthetic.zarr", shard_size=2)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_xarray_reads_both_stores(site: Path, arrays) -> None:
    import xarray as xr

    labels = open_label_store(site / "labels" / "synthetic.zarr")
    soft = xr.open_zarr(site / "labels" / "synthetic.zarr", group="soft")
    assert sorted(soft.data_vars) == sorted(VARS)
    assert soft["plc"].dims == ("image", "class", "y", "x")
    for v in VARS:
        np.testing.assert_array_equal(soft[v].values, labels.read_codes(v, slice(None)))
    tree = xr.open_datatree(site / "labels" / "synthetic.zarr", engine="zarr")
    assert tree["ids"].values.tolist() == IDS and bool(tree["done"].values.all())
    np.testing.assert_array_equal(tree["stats"]["dice"].values, labels.stat("dice"))
    data = xr.open_zarr(site / "data" / "synthetic.zarr")
    assert data["images"].dims == ("image", "y", "x", "channel")
    np.testing.assert_array_equal(data["images"].values, arrays[0])
    np.testing.assert_array_equal(data["masks"].values, arrays[1])
    store = open_dataset_store(site / "data" / "synthetic.zarr")
    assert data["split"].values.tolist() == store.split.tolist()
    dtree = xr.open_datatree(site / "data" / "synthetic.zarr", engine="zarr")
    assert set(dtree.data_vars) == {"images", "masks", "split"}


def test_readme_snippets_run_and_agree_with_plc(site: Path) -> None:
    snippets = readme_snippets()
    assert len(snippets) == 3  # zarr, xarray, dask
    ns: dict = {}
    for code in snippets:
        exec(compile(code, f"{DOC}:{SECTION}", "exec"), ns)  # the docs page, as written
    labels = open_label_store(site / "labels" / "synthetic.zarr")
    assert ns["ids"].tolist() == IDS
    np.testing.assert_allclose(ns["probs"], np.exp(labels.read("plc", 0)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ns["probs"].sum(axis=0), 1.0, rtol=1e-6)
    codes = labels.read_codes("plc", slice(None))  # (N, C, H, W)
    np.testing.assert_array_equal(ns["plc"].compute(), codes)  # the dask block's array
    fg = (decode_logprobs(codes, axis=1).argmax(axis=1) == 1).mean(axis=(1, 2))  # (N,)
    np.testing.assert_allclose(ns["foreground"], fg)
    assert ns["soft"]["plc"].dims == ("image", "class", "y", "x")
    assert list(ns["stats"].data_vars) == ["dice"]
    assert ns["data"]["masks"].dims == ("image", "y", "x")
