"""The prepared dataset store ``data/<name>.zarr``: images, masks, split and the manifest.

Layout (Zarr v3 group, schema ``plc-kd/dataset`` version 2)::

    images            (N, H, W, 3) uint8, dims (image, y, x, channel), chunk_images images
                      per chunk (attrs; absent: 1), shards of shard_size images, zstd + crc32c
    masks             (N, H, W)    uint8 class ids, dims (image, y, x), chunked like images
    split             (N,)         variable-length UTF-8 strings (zarr ``string``), dims (image,)
    manifest.parquet  the manifest table, rows in store order (a plain file inside the group)

Every chunk carries a crc32c checksum (so does each shard's index); metadata is consolidated
once at publish. Version 1 (unsharded, no checksums) is refused. Strings are stored with zarr
3.1's native variable-length ``string`` data type; they read back as ``<U`` arrays here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from storage_schema import _common as c
from storage_schema import integrity as ig
from storage_schema import location as loc
from storage_schema.direct import DirectArray
from storage_schema.errors import StoreError
from storage_schema.manifest import SPLITS, check_manifest_table, manifest_folds, manifest_sha256

logger = logging.getLogger(__name__)

DATASET_SCHEMA = "plc-kd/dataset"
DATASET_SCHEMA_VERSION = 2  # 2: sharded, crc32c on every chunk, dimension_names
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
    k = int(attrs.get("chunk_images", 1))
    s = min(int(attrs["shard_size"]), -(-n // k) * k)  # whole chunks per shard
    group = zarr.open_group(tmp, mode="w")
    # write_empty_chunks: an all-zero mask is still written, so every shard file exists
    config = {"write_empty_chunks": True}
    a = group.create_array(
        "images", shape=images.shape, dtype="uint8", chunks=(k, h, w, 3), shards=(s, h, w, 3),
        compressors=ig.codecs(), fill_value=0, dimension_names=("image", "y", "x", "channel"),
        config=config,
    )  # fmt: skip
    a[:] = images
    m = group.create_array(
        "masks", shape=masks.shape, dtype="uint8", chunks=(k, h, w), shards=(s, h, w),
        compressors=ig.codecs(), fill_value=0, dimension_names=("image", "y", "x"),
        config=config,
    )  # fmt: skip
    m[:] = masks
    sp = group.create_array(
        "split", shape=(n,), dtype=str, chunks=(n,), compressors=ig.codecs(),
        dimension_names=("image",),
    )  # fmt: skip
    sp[:] = np.asarray(split, dtype=str)
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
    shard_size: int = 64,
    overwrite: bool = False,
    created: str | None = None,
    chunk_images: int = 1,
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
        shard_size: images per shard file (the last shard may be short).
        overwrite: replace an existing store at ``path``.
        chunk_images: images per inner chunk of ``images`` and ``masks``; divides
            ``shard_size`` (see :func:`~storage_schema.create_label_store`).
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
    for field_name, value in (("shard_size", shard_size), ("chunk_images", chunk_images)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise StoreError(f"{field_name} must be a positive int, got {value!r}.")
    if shard_size % chunk_images:
        raise StoreError(
            f"chunk_images ({chunk_images}) must divide shard_size ({shard_size}): a shard "
            "holds whole chunks."
        )
    attrs = {
        "schema": DATASET_SCHEMA,
        "schema_version": DATASET_SCHEMA_VERSION,
        "name": c.check_name(name, "name"),
        "size": [int(images.shape[1]), int(images.shape[2])],
        "classes": cls_list,
        "source": c.check_json(source, "source"),
        "n_images": int(images.shape[0]),
        "shard_size": shard_size,
        **({"chunk_images": chunk_images} if chunk_images != 1 else {}),
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
        c.consolidate(tmp)
        c.publish_dir(tmp, path, overwrite=overwrite)
    except BaseException:
        c.remove(tmp)
        raise
    logger.info("wrote dataset store %s (%d images)", path, images.shape[0])
    return path


@dataclass
class DatasetStore:
    """An opened, validated dataset store (arrays are lazy ``zarr.Array`` views).

    Read through :meth:`read_images` and :meth:`read_masks`: a corrupt chunk then raises a
    StoreError naming the image, and a read after the store was republished is refused. A
    pickled store (e.g. sent to a DataLoader worker) reopens its own handles on unpickling.
    """

    path: Path | str
    name: str
    images: ig.CheckedArray  # (N, H, W, 3) uint8, lazy; every read checked
    masks: ig.CheckedArray  # (N, H, W) uint8, lazy; every read checked
    split: np.ndarray
    manifest: pa.Table
    manifest_sha256: str
    classes: list[str]
    size: tuple[int, int]
    attrs: dict[str, Any]
    pin: loc.Pin | None = field(default=None, repr=False, compare=False)
    fold: int | None = None  # a cross-validation view (see with_fold); None: the stored split
    _ids: list[str] = field(init=False, repr=False, compare=False)  # for messages, per read
    _direct: dict[str, DirectArray | None] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )  # per array, built on first read

    def __post_init__(self) -> None:
        self._ids = self.manifest.column("id").to_pylist()
        what = f"dataset store {self.path}"
        for name in ("images", "masks"):
            arr = getattr(self, name)
            raw = arr.array if isinstance(arr, ig.CheckedArray) else arr
            setattr(self, name, ig.CheckedArray(raw, name, what, self._ids, self.pin))

    def ids(self) -> list[str]:
        """Image ids in store order."""
        return list(self._ids)

    def read_images(self, index: ig.Index) -> np.ndarray:
        """uint8 images: ``(H, W, 3)`` for an int index, ``(n, H, W, 3)`` for a slice or array."""
        return self._read(self.images, "images", index)

    def read_masks(self, index: ig.Index) -> np.ndarray:
        """uint8 class ids: ``(H, W)`` for an int index, ``(n, H, W)`` for a slice or array."""
        return self._read(self.masks, "masks", index)

    def _read(self, arr: ig.CheckedArray, key: str, index: ig.Index) -> np.ndarray:
        what = f"dataset store {self.path}"
        if key not in self._direct:  # a local store: runs read from the shard files
            local = self.path if isinstance(self.path, Path) else None
            self._direct[key] = DirectArray.of(arr.array, None if local is None else local / key)
        return ig.read_checked(
            arr.array, key, index, what=what, ids=self._ids, pin=self.pin, direct=self._direct[key]
        )

    def __reduce__(self) -> tuple[Any, ...]:
        generation = self.pin.generation if self.pin is not None else None
        return (_reopen, (self.path, self.manifest_sha256, generation, self.fold))

    def folds(self) -> np.ndarray | None:
        """int64 fold of every image in store order, or None when the manifest has none."""
        folds = manifest_folds(self.manifest)
        return None if folds is None else np.asarray(folds, dtype=np.int64)

    def with_fold(self, fold: int) -> DatasetStore:
        """The cross-validation view of fold ``fold``: its images are the ``test`` split,
        every other fold's are ``train`` (``val`` is empty); arrays and manifest are shared.

        Raises:
            StoreError: the manifest has no folds, or ``fold`` is not one of them.
        """
        folds = self.folds()
        if folds is None:
            raise StoreError(
                f"dataset store {self.path} has no folds; prepare it with `plc prepare "
                "--folds K` to select a fold."
            )
        k = int(folds.max()) + 1
        if not 0 <= fold < k:
            raise StoreError(f"dataset store {self.path} has folds 0..{k - 1}, not fold {fold}.")
        split = np.where(folds == fold, "test", "train")  # (N,) <U5
        return replace(self, split=split, fold=int(fold))

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
    group: zarr.Group, key: str, dtype: str, shape: tuple[int, ...], path: Path | str
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


def check_dataset_attrs(attrs: Mapping[str, Any], path: Path | str) -> None:
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
            f"{DATASET_SCHEMA_VERSION} (version 2 added sharding and crc32c checksums); "
            "rebuild it with `plc prepare --overwrite`."
        )


def read_manifest(where: loc.Location, expected_sha: str, n: int) -> tuple[pa.Table, str]:
    """Read the store's manifest and check its row count and hash against the attrs."""
    file = where.join(MANIFEST_FILE)
    try:
        data = where.read_bytes(MANIFEST_FILE)
    except FileNotFoundError:
        raise StoreError(
            f"dataset store {where} has no {MANIFEST_FILE}; rebuild it with `plc prepare --overwrite`."
        ) from None
    try:
        raw = pq.read_table(pa.BufferReader(data))
    except (OSError, pa.ArrowException) as err:
        raise StoreError(
            f"{file} cannot be read ({err}); rebuild it with `plc prepare --overwrite`."
        ) from None
    table = check_manifest_table(raw, file)
    if table.num_rows != n:
        raise StoreError(
            f"{file} has {table.num_rows} rows but the store holds {n} images; rebuild it with "
            "`plc prepare --overwrite`."
        )
    sha = manifest_sha256(table)
    if sha != expected_sha:
        raise StoreError(
            f"{file} hashes to {sha[:12]} but the store records {str(expected_sha)[:12]}; the "
            "manifest was changed after writing, rebuild with `plc prepare --overwrite`."
        )
    return table, sha


def _open(where: loc.Location) -> DatasetStore:
    attrs = loc.read_attrs(where, "dataset store")
    shown = where.local if where.local is not None else str(where)
    check_dataset_attrs(attrs, shown)
    group = where.open_group()
    n = int(attrs["n_images"])
    h, w = (int(v) for v in attrs["size"])
    images = _expect_array(group, "images", "uint8", (n, h, w, 3), shown)
    masks = _expect_array(group, "masks", "uint8", (n, h, w), shown)
    table, sha = read_manifest(where, attrs["manifest_sha256"], n)
    split_arr = _expect_array(group, "split", "str", (n,), shown)
    ids = table.column("id").to_pylist()
    split = ig.read_checked(split_arr, "split", slice(None), what=f"dataset store {where}", ids=ids)
    return DatasetStore(
        path=shown,
        name=attrs["name"],
        images=images,
        masks=masks,
        split=np.asarray(split.tolist(), dtype=str),
        manifest=table,
        manifest_sha256=sha,
        classes=list(attrs["classes"]),
        size=(h, w),
        attrs=attrs,
    )


def open_dataset_store(path: str | Path) -> DatasetStore:
    """Open and validate a dataset store: a local directory or a read-only fsspec URL.

    Raises:
        StoreError: one sentence naming ``path`` for a missing store, another schema or
            version, a missing or mis-shaped array, or a missing or changed manifest.
    """
    where = loc.locate(path)
    store, pin = loc.open_consistent(where, "dataset store", lambda: _open(where))
    store.pin = store.images.pin = store.masks.pin = pin
    return store


def _reopen(
    path: Path | str, manifest_sha: str, generation: loc.Generation, fold: int | None = None
) -> DatasetStore:
    """Unpickling: open the same store (and fold view) again with its own handles, refusing a
    republished one."""
    store = open_dataset_store(path)
    if store.manifest_sha256 != manifest_sha or (
        generation is not None and store.pin is not None and store.pin.generation != generation
    ):
        raise StoreError(
            f"dataset store {path} was replaced (republished) since it was first opened; "
            "rerun the command to read the new store."
        )
    return store if fold is None else store.with_fold(fold)
