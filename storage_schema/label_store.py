"""The soft-label store ``labels/<name>.zarr``: creation and shard-wise writing.

Layout (Zarr v3 group, schema ``plc-kd/labels`` version 2)::

    ids              (N,)          variable-length UTF-8 strings, manifest order
    done             (N,)          bool, chunks of shard_size: a shard's flags are its own chunk
    soft/<variant>   (N, C, H, W)  int8 log-prob codes (see encoding.py), chunks
                                   (chunk_images, C, H, W) (attrs, absent: 1), shards
                                   (shard_size, C, H, W), zstd
    stats/<name>     (N,)          float64, NaN until written, chunks of shard_size

Every chunk carries a crc32c checksum (inside a shard: each chunk, and the shard index);
every array has ``dimension_names`` (``image``, ``class``, ``y``, ``x``), so xarray reads
the groups; metadata is consolidated once, at publish.

A shard is the unit of writing: each writer task owns whole shards, so several processes can
write different shards at once (every file they touch is their own). The store is written at
``<path>.writing`` with status ``writing`` and published by rename with status ``complete``.
Readers live in :mod:`storage_schema.label_reader` and are re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from storage_schema import _common as c
from storage_schema import integrity as ig
from storage_schema.encoding import LOGP_SCALE
from storage_schema.errors import StoreError
from storage_schema.label_reader import (
    LABEL_SCHEMA,
    LABEL_SCHEMA_VERSION,
    LabelStore,
    open_label_store,
)
from storage_schema.label_writer import LabelStoreWriter

__all__ = [
    "LABEL_SCHEMA",
    "LABEL_SCHEMA_VERSION",
    "LabelStore",
    "LabelStoreWriter",
    "create_label_store",
    "open_label_store",
]

logger = logging.getLogger(__name__)


def _check_variants(variants: Sequence[str]) -> list[str]:
    """Distinct array-safe names; which variants exist is the producer's business."""
    names = [c.check_name(v, "variants entry") for v in variants]
    if not names or len(set(names)) != len(names):
        raise StoreError(f"variants must be a non-empty list of distinct names, got {names!r}.")
    return names


def _check_ids(ids: Sequence[str]) -> list[str]:
    out = list(ids)
    if not out or not all(isinstance(i, str) and i for i in out):
        raise StoreError("ids must be a non-empty sequence of non-empty strings (manifest order).")
    if len(set(out)) != len(out):
        dup = next(i for i in out if out.count(i) > 1)
        raise StoreError(f"ids must be unique, but {dup!r} appears more than once.")
    return out


def _check_positive(value: object, field: str) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise StoreError(f"{field} must be a positive int, got {value!r}.")
    return int(value)


def _build_attrs(ids: list[str], spec: Mapping[str, Any], created: str | None) -> dict[str, Any]:
    return {
        "schema": LABEL_SCHEMA,
        "schema_version": LABEL_SCHEMA_VERSION,
        "status": "writing",
        "dataset_name": spec["dataset_name"],
        "manifest_sha256": spec["manifest_sha256"],
        "n_images": len(ids),
        "size": spec["size"],
        "classes": spec["classes"],
        "variants": spec["variants"],
        "stat_names": spec["stat_names"],
        "encoding": {"kind": "int8-logprob", "scale": LOGP_SCALE},
        "shard_size": spec["shard_size"],
        **({"chunk_images": spec["chunk_images"]} if spec["chunk_images"] != 1 else {}),
        "provenance": spec["provenance"],
        "created": c.now_iso(created),
        "package": c.PACKAGE,
        "package_version": c.package_version(),
    }


def _create_arrays(group: zarr.Group, ids: list[str], attrs: Mapping[str, Any]) -> None:
    n, s, k = len(ids), attrs["shard_size"], attrs.get("chunk_images", 1)
    chw = (len(attrs["classes"]), *attrs["size"])
    image = ("image",)
    arr = group.create_array(
        "ids", shape=(n,), dtype=str, chunks=(n,), compressors=ig.codecs(), dimension_names=image
    )
    arr[:] = np.asarray(ids, dtype=str)
    group.create_array(
        "done", shape=(n,), dtype="bool", chunks=(s,), fill_value=False,
        compressors=ig.codecs(compress=False), dimension_names=image,
    )  # fmt: skip
    for v in attrs["variants"]:
        group.create_array(
            f"soft/{v}", shape=(n, *chw), dtype="int8", chunks=(k, *chw), shards=(s, *chw),
            compressors=ig.codecs(), fill_value=0, dimension_names=("image", "class", "y", "x"),
        )  # fmt: skip
    for name in attrs["stat_names"]:
        group.create_array(
            f"stats/{name}", shape=(n,), dtype="float64", chunks=(s,), fill_value=np.nan,
            compressors=ig.codecs(compress=False), dimension_names=image,
        )  # fmt: skip


_RESUME_KEYS = (
    "n_images",
    "variants",
    "classes",
    "size",
    "manifest_sha256",
    "shard_size",
    "stat_names",
)


def first_difference(a: Any, b: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first differing leaf of two JSON-like values: (dotted path, a's value, b's value)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            found = first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
            if found is not None:
                return found
        return None
    return None if a == b else (prefix.rstrip(".") or "(root)", a, b)


def _resume(
    tmp: Path, ids: list[str], attrs: Mapping[str, Any], overwrite: bool
) -> LabelStoreWriter:
    """Reopen an unfinished store whose layout matches ``attrs``; refuse naming the mismatch."""
    writer = LabelStoreWriter.open(tmp, overwrite=overwrite)
    old = writer.attrs
    for key in (*_RESUME_KEYS, "chunk_images"):
        default = 1 if key == "chunk_images" else None  # absent: one image per chunk
        if old.get(key, default) != attrs.get(key, default):
            raise StoreError(
                f"cannot resume {tmp}: its {key} is {old.get(key, default)!r} but this run has "
                f"{attrs.get(key, default)!r}; rerun without --resume to start over."
            )
    if writer.ids != ids:
        first = next(i for i, (a, b) in enumerate(zip(writer.ids, ids, strict=True)) if a != b)
        raise StoreError(
            f"cannot resume {tmp}: its ids differ from this run's from index {first} "
            f"({writer.ids[first]!r} vs {ids[first]!r}); rerun without --resume to start over."
        )
    where = first_difference(old.get("provenance"), attrs["provenance"])
    if where is not None:
        field, was, now = where
        raise StoreError(
            f"cannot resume {tmp}: its provenance field '{field}' is {was!r} but this run has "
            f"{now!r}; rerun with the same inputs and options, or without --resume to start over."
        )
    n_pending, n_all = len(writer.pending_shards()), len(writer.shard_bounds())
    logger.info("resuming %s: %d of %d shards already done", tmp, n_all - n_pending, n_all)
    return writer


def create_label_store(
    path: str | Path,
    *,
    ids: Sequence[str],
    variants: Sequence[str],
    classes: list[str],
    height: int,
    width: int,
    dataset_name: str,
    manifest_sha256: str,
    stat_names: Sequence[str] = (),
    shard_size: int = 64,
    provenance: dict | None = None,
    resume: bool = False,
    chunk_images: int = 1,
    overwrite: bool = False,
    created: str | None = None,
) -> LabelStoreWriter:
    """Create (or resume) a label store at ``<path>.writing``; publish later by rename.

    Args:
        path: the final store directory, e.g. ``labels/<name>.zarr``.
        ids: image ids in manifest order, ``N`` of them.
        variants: the names of the soft-label variants to store (``soft/<name>``).
        classes: class names, ``C`` of them.
        height: ``H`` of every map.
        width: ``W`` of every map.
        dataset_name: the dataset store's name.
        manifest_sha256: the dataset manifest's hash (readers check it).
        stat_names: per-image float64 statistics to store.
        shard_size: images per shard (the unit of writing).
        chunk_images: images per inner chunk of ``soft/<variant>``; divides ``shard_size``.
            1 reads any image alone; more read contiguous runs faster (BENCHMARKS.md §10),
            and a corrupt chunk then names all its images.
        provenance: JSON-serialisable description: checkpoints' SHA-256 and config, precompute
            config, package version, time.
        resume: reopen a matching unfinished ``<path>.writing`` store instead of replacing it.
        overwrite: allow replacing a published store at ``path`` (at publish time).
        created: ISO time for ``attrs['created']``; None means now (pass one for byte-identical
            stores).

    Returns:
        A writer on the temporary store.

    Raises:
        StoreError: on bad arguments, a published ``path`` without ``overwrite``, or a
            resumable store whose layout differs (naming the field).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise StoreError(
            f"label store {path} already exists; pass overwrite=True (--force) to replace it."
        )
    id_list = _check_ids(ids)
    if not c.is_sha256(manifest_sha256):
        raise StoreError(
            f"manifest_sha256 must be a lowercase 64-digit hex SHA-256, got {manifest_sha256!r}."
        )
    spec = {
        "dataset_name": c.check_name(dataset_name, "dataset_name"),
        "manifest_sha256": manifest_sha256,
        "size": [_check_positive(height, "height"), _check_positive(width, "width")],
        "classes": c.check_classes(classes),
        "variants": _check_variants(variants),
        "stat_names": [c.check_name(s, "stat_names entry") for s in stat_names],
        "shard_size": _check_positive(shard_size, "shard_size"),
        "chunk_images": _check_positive(chunk_images, "chunk_images"),
        "provenance": c.check_json(provenance or {}, "provenance"),
    }
    if spec["shard_size"] % spec["chunk_images"]:
        raise StoreError(
            f"chunk_images ({chunk_images}) must divide shard_size ({shard_size}): a shard "
            "holds whole chunks."
        )
    if len(set(spec["stat_names"])) != len(spec["stat_names"]):
        raise StoreError(f"stat_names must be distinct, got {list(stat_names)!r}.")
    attrs = _build_attrs(id_list, spec, created)
    tmp = c.writing_path(path)
    if resume and tmp.exists():
        return _resume(tmp, id_list, attrs, overwrite)
    c.remove(tmp)
    group = zarr.open_group(tmp, mode="w")
    group.attrs.update(attrs)
    _create_arrays(group, id_list, attrs)
    logger.info(
        "created label store %s (%d images, %d variants)", tmp, len(id_list), len(spec["variants"])
    )
    return LabelStoreWriter.open(tmp, overwrite=overwrite)
