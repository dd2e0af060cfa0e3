"""The prepared dataset store ``data/<name>.zarr``: images, masks, split and the manifest.

Layout (Zarr v3 group, schema ``plc-kd/dataset`` version 1)::

    images            (N, H, W, 3) uint8, one image per chunk, zstd
    masks             (N, H, W)    uint8 class ids, one mask per chunk, zstd
    split             (N,)         variable-length UTF-8 strings (zarr ``string``), manifest split
    manifest.parquet  the manifest table, rows in store order (a plain file inside the group)

Strings are stored with zarr 3.1's native variable-length ``string`` data type (``vlen-utf8``
codec); they read back as numpy ``StringDType`` and are converted to ``<U`` arrays here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from storage_schema import _common as c
from storage_schema.errors import StoreError
from storage_schema.manifest import SPLITS, check_manifest_table, manifest_sha256

logger = logging.getLogger(__name__)

DATASET_SCHEMA = "plc-kd/dataset"
DATASET_SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.parquet"


def _check_arrays(images: np.ndarray, masks: np.ndarray, n_classes: int) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise StoreError(f"images must be a uint8 array (N, H, W, 3), got {_describe(images)}.")
    n, h, w, ch = images.shape
    if ch != 3 or n == 0:
        raise StoreError(f"images must have shape (N, H, W, 3) with N >= 1, got {images.shape}.")
    if not isinstance(masks, np.ndarray) or masks.dtype != np.uint8 or masks.shape != (n, h, w):
        raise StoreError(
            f"masks must be a uint8 array of shape {(n, h, w)}, got {_describe(masks)}."
        )
    top = int(masks.max())
    if top >= n_classes:
        raise StoreError(
            f"masks hold class id {top} but only {n_classes} classes are named; fix classes or "
            "masks."
        )


def _describe(x: object) -> str:
    if isinstance(x, np.ndarray):
        return f"{x.dtype} array of shape {x.shape}"
    return type(x).__name__


def _split_counts(split: list[str]) -> dict[str, int]:
    return {s: int(sum(v == s for v in split)) for s in SPLITS}


def _write_group(
    tmp: Path, images: np.ndarray, masks: np.ndarray, split: list[str], attrs: dict
) -> None:
    n, h, w, _ = images.shape
    group = zarr.open_group(tmp, mode="w")
    a = group.create_array(
        "images",
        shape=images.shape,
        dtype="uint8",
        chunks=(1, h, w, 3),
        compressors=c.zstd(),
        fill_value=0,
    )
    a[:] = images
    m = group.create_array(
        "masks",
        shape=masks.shape,
        dtype="uint8",
        chunks=(1, h, w),
        compressors=c.zstd(),
        fill_value=0,
    )
    m[:] = masks
    s = group.create_array("split", shape=(n,), dtype=str, chunks=(n,), compressors=c.zstd())
    s[:] = np.asarray(split, dtype=str)
    group.attrs.update(attrs)


def write_dataset_store(
    path: str | Path,
    *,
    images: np.ndarray,
    masks: np.ndarray,
    manifest: pa.Table,
    name: str,
    classes: list[str],
    source: dict,
    overwrite: bool = False,
    created: str | None = None,
) -> Path:
    """Write a prepared dataset store atomically (temporary sibling, then rename).

    Args:
        path: the store directory, e.g. ``data/<name>.zarr``.
        images: ``(N, H, W, 3)`` uint8.
        masks: ``(N, H, W)`` uint8 class ids ``< len(classes)``.
        manifest: ``N`` rows from :func:`build_manifest`, in the same order as the arrays.
        name: dataset name.
        classes: class names, index = class id.
        source: JSON-serialisable description of the raw source (reader, root, params).
        overwrite: replace an existing store at ``path``.
        created: ISO time for ``attrs['created']``; None means now (pass one for byte-identical
            stores).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        StoreError: on bad inputs, or when ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise StoreError(
            f"dataset store {path} already exists; pass overwrite=True (--force) to replace it."
        )
    cls_list = c.check_classes(classes)
    _check_arrays(images, masks, len(cls_list))
    table = check_manifest_table(manifest)
    if table.num_rows != images.shape[0]:
        raise StoreError(
            f"manifest has {table.num_rows} rows but images has {images.shape[0]}; they must "
            "match row for row."
        )
    split = table.column("split").to_pylist()
    attrs = {
        "schema": DATASET_SCHEMA,
        "schema_version": DATASET_SCHEMA_VERSION,
        "name": c.check_name(name, "name"),
        "size": [int(images.shape[1]), int(images.shape[2])],
        "classes": cls_list,
        "source": c.check_json(source, "source"),
        "n_images": int(images.shape[0]),
        "counts": _split_counts(split),
        "manifest_sha256": manifest_sha256(table),
        "created": c.now_iso(created),
        "package": c.PACKAGE,
        "package_version": c.package_version(),
    }
    tmp = c.unique_tmp(path)
    try:
        _write_group(tmp, images, masks, split, attrs)
        pq.write_table(table, tmp / MANIFEST_FILE)
        c.publish_dir(tmp, path, overwrite=overwrite)
    except BaseException:
        c.remove(tmp)
        raise
    logger.info("wrote dataset store %s (%d images)", path, images.shape[0])
    return path


@dataclass
class DatasetStore:
    """An opened, validated dataset store (arrays are lazy ``zarr.Array`` views)."""

    path: Path
    name: str
    images: zarr.Array
    masks: zarr.Array
    split: np.ndarray
    manifest: pa.Table
    manifest_sha256: str
    classes: list[str]
    size: tuple[int, int]
    attrs: dict[str, Any]

    def ids(self) -> list[str]:
        """Image ids in store order."""
        return self.manifest.column("id").to_pylist()

    def indices(self, split: str) -> np.ndarray:
        """int64 indices of the images in ``split``, in store order."""
        if split not in SPLITS:
            raise StoreError(
                f"unknown split {split!r} for dataset store {self.path}; choose one of "
                f"{', '.join(SPLITS)}."
            )
        return np.flatnonzero(self.split == split).astype(np.int64)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _expect_array(
    group: zarr.Group, key: str, dtype: str, shape: tuple[int, ...], path: Path
) -> zarr.Array:
    if key not in group or not isinstance(group[key], zarr.Array):
        raise StoreError(
            f"dataset store {path} has no array '{key}'; rebuild it with `plc prepare`."
        )
    arr = group[key]
    if str(arr.dtype) != dtype and not (dtype == "str" and arr.dtype.kind in "TUO"):
        raise StoreError(
            f"dataset store {path} array '{key}' has dtype {arr.dtype}, expected {dtype}; "
            "rebuild it with `plc prepare`."
        )
    if tuple(arr.shape) != shape:
        raise StoreError(
            f"dataset store {path} array '{key}' has shape {tuple(arr.shape)}, expected "
            f"{shape}; rebuild it with `plc prepare`."
        )
    return arr


def check_dataset_attrs(attrs: Mapping[str, Any], path: Path) -> None:
    """Refuse attrs of another schema or schema version, in one sentence naming ``path``."""
    if attrs.get("schema") != DATASET_SCHEMA:
        raise StoreError(
            f"{path} is not a plc-kd dataset store (schema {attrs.get('schema')!r}, expected "
            f"{DATASET_SCHEMA!r})."
        )
    if attrs.get("schema_version") != DATASET_SCHEMA_VERSION:
        raise StoreError(
            f"dataset store {path} has schema version {attrs.get('schema_version')!r} but this "
            "code reads version "
            f"{DATASET_SCHEMA_VERSION}; rebuild it with `plc prepare --force`."
        )


def read_manifest(path: Path, expected_sha: str, n: int) -> tuple[pa.Table, str]:
    """Read the store's manifest and check its row count and hash against the attrs."""
    file = path / MANIFEST_FILE
    if not file.is_file():
        raise StoreError(
            f"dataset store {path} has no {MANIFEST_FILE}; rebuild it with `plc prepare --force`."
        )
    table = check_manifest_table(pq.read_table(file), f"{file}")
    if table.num_rows != n:
        raise StoreError(
            f"{file} has {table.num_rows} rows but the store holds {n} images; rebuild it with "
            "`plc prepare --force`."
        )
    sha = manifest_sha256(table)
    if sha != expected_sha:
        raise StoreError(
            f"{file} hashes to {sha[:12]} but the store records {str(expected_sha)[:12]}; the "
            "manifest was changed "
            "after writing, rebuild with `plc prepare --force`."
        )
    return table, sha


def open_dataset_store(path: str | Path) -> DatasetStore:
    """Open and validate a dataset store.

    Raises:
        StoreError: one sentence naming ``path`` for a missing store, another schema or
            version, a missing or mis-shaped array, or a missing or changed manifest.
    """
    path = Path(path)
    attrs = c.read_attrs(path, "dataset store")
    check_dataset_attrs(attrs, path)
    group = zarr.open_group(path, mode="r")
    n = int(attrs["n_images"])
    h, w = (int(v) for v in attrs["size"])
    images = _expect_array(group, "images", "uint8", (n, h, w, 3), path)
    masks = _expect_array(group, "masks", "uint8", (n, h, w), path)
    split = np.asarray(_expect_array(group, "split", "str", (n,), path)[:].tolist(), dtype=str)
    table, sha = read_manifest(path, attrs["manifest_sha256"], n)
    return DatasetStore(
        path=path,
        name=attrs["name"],
        images=images,
        masks=masks,
        split=split,
        manifest=table,
        manifest_sha256=sha,
        classes=list(attrs["classes"]),
        size=(h, w),
        attrs=attrs,
    )
