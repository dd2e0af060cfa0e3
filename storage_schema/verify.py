"""Full verification of a dataset or label store: every problem listed, one error raised.

Every chunk of every array is read, so each crc32c checksum (chunks and shard indexes) is
checked; each unreadable image is named with the array and the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from storage_schema import integrity as ig
from storage_schema import location as loc
from storage_schema.dataset_store import DATASET_SCHEMA, DATASET_SCHEMA_VERSION, MANIFEST_FILE
from storage_schema.encoding import CODE_MAX, CODE_MIN, decode_logprobs
from storage_schema.errors import StoreError
from storage_schema.label_reader import LABEL_SCHEMA, LABEL_SCHEMA_VERSION
from storage_schema.manifest import SPLITS, check_manifest_table, manifest_sha256

logger = logging.getLogger(__name__)

_BLOCK = 64  # images per read while scanning arrays


def _first(ids: list[str], idx: np.ndarray, k: int = 5) -> str:
    """``'a', 'b', ... (+n more)`` for the ids at ``idx``."""
    names = ", ".join(repr(ids[i]) if i < len(ids) else f"#{i}" for i in idx[:k])
    return names + (f" (+{idx.size - k} more)" if idx.size > k else "")


def _unreadable(key: str, bad: dict[int, str], ids: list[str], problems: list[str]) -> None:
    """One problem per array and reason, naming every affected image."""
    by_reason: dict[str, list[int]] = {}
    for i, why in sorted(bad.items()):
        by_reason.setdefault(why, []).append(i)
    for why, idx in by_reason.items():
        problems.append(
            f"array '{key}': {len(idx)} image(s) unreadable ({why}): {ig.name_ids(ids, idx)}"
        )


def _read_all(
    arr: Any, key: str, ids: list[str], problems: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(positions, values) of the images of a 1-D array that read; the others are problems."""
    bad: dict[int, str] = {}
    parts = list(ig.scan(arr, bad))
    _unreadable(key, bad, ids, problems)
    pos = np.concatenate([p for p, _ in parts]) if parts else np.zeros(0, np.int64)
    vals = np.concatenate([v for _, v in parts]) if parts else np.zeros(0, arr.dtype)
    return pos, vals


def _array(
    group: zarr.Group, key: str, dtype: str, shape: tuple[int, ...], problems: list[str]
) -> Any:
    arr = group.get(key)
    if not isinstance(arr, zarr.Array):
        problems.append(f"array '{key}' is missing")
        return None
    kind_ok = str(arr.dtype) == dtype or (dtype == "str" and arr.dtype.kind in "TUO")
    if not kind_ok or tuple(arr.shape) != shape:
        problems.append(
            f"array '{key}' is {arr.dtype} {tuple(arr.shape)}, expected {dtype} {shape}"
        )
        return None
    if not ig.has_checksum(arr):
        problems.append(f"array '{key}' has no crc32c checksum in its codecs")
    return arr


def _check_version(attrs: dict, schema: str, version: int, problems: list[str]) -> None:
    if attrs.get("schema_version") != version:
        problems.append(
            f"schema version is {attrs.get('schema_version')!r}, expected {version} for {schema}"
        )


def _dataset_masks(masks: Any, ids: list[str], n_classes: int, problems: list[str]) -> None:
    bad: dict[int, str] = {}
    over: list[int] = []
    top = 0  # the max of the first mask over the limit
    for pos, block in ig.scan(masks, bad):  # block (n, H, W)
        if not len(pos):
            continue
        tops = block.max(axis=(1, 2))  # (n,)
        top = top if over or not (tops >= n_classes).any() else int(tops[tops >= n_classes][0])
        over += pos[tops >= n_classes].tolist()
    _unreadable("masks", bad, ids, problems)
    if over:
        problems.append(
            f"{len(over)} mask(s) hold class ids >= {n_classes} (n classes), e.g. "
            f"{_first(ids, np.asarray(over))} with max {top}"
        )


def _dataset_images(images: Any, ids: list[str], problems: list[str]) -> None:
    bad: dict[int, str] = {}
    for _ in ig.scan(images, bad):
        pass  # reading checks every chunk's crc32c
    _unreadable("images", bad, ids, problems)


def _dataset_manifest(
    where: loc.Location, attrs: dict, n: int, split: Any, problems: list[str]
) -> list[str]:
    fallback = [f"#{i}" for i in range(n)]
    try:
        table = check_manifest_table(
            pq.read_table(pa.BufferReader(where.read_bytes(MANIFEST_FILE))), MANIFEST_FILE
        )
    except FileNotFoundError:
        problems.append(f"{MANIFEST_FILE} is missing")
        return fallback
    except (StoreError, OSError, pa.ArrowException) as err:
        problems.append(f"{MANIFEST_FILE} cannot be read: {err}")
        return fallback
    sha, recorded = manifest_sha256(table), str(attrs.get("manifest_sha256"))
    if sha != recorded:
        problems.append(
            f"{MANIFEST_FILE} hashes to {sha[:12]} but attrs record {recorded[:12]} (changed "
            "after writing)"
        )
    ids = table.column("id").to_pylist()
    if len(ids) != n:
        problems.append(f"{MANIFEST_FILE} has {len(ids)} rows but the store holds {n} images")
        return fallback
    if len(set(ids)) != len(ids):
        problems.append(f"{MANIFEST_FILE} has duplicate ids")
    if split is not None and split.tolist() != table.column("split").to_pylist():
        problems.append(f"array 'split' differs from the {MANIFEST_FILE} split column")
    return ids


def _check_dataset(where: loc.Location, attrs: dict, problems: list[str]) -> dict[str, Any]:
    _check_version(attrs, DATASET_SCHEMA, DATASET_SCHEMA_VERSION, problems)
    group = where.open_group()
    n, (h, w) = int(attrs.get("n_images", -1)), attrs.get("size", (0, 0))
    classes = list(attrs.get("classes", []))
    images = _array(group, "images", "uint8", (n, h, w, 3), problems)
    masks = _array(group, "masks", "uint8", (n, h, w), problems)
    split_arr = _array(group, "split", "str", (n,), problems)
    split = None
    if split_arr is not None:
        pos, values = _read_all(split_arr, "split", [f"#{i}" for i in range(n)], problems)
        split = values if len(pos) == n else None
    ids = _dataset_manifest(where, attrs, n, split, problems)
    if images is not None:
        _dataset_images(images, ids, problems)
    if masks is not None:
        _dataset_masks(masks, ids, len(classes), problems)
    if split is not None:
        values = split.tolist()
        counts = {s: values.count(s) for s in SPLITS}
        if counts != attrs.get("counts"):
            problems.append(f"split counts are {counts} but attrs record {attrs.get('counts')}")
    keys = ("name", "n_images", "size", "classes", "counts", "manifest_sha256", "created")
    return {"kind": "dataset", **{k: attrs.get(k) for k in keys}}


def _soft_problems(arr: Any, n_classes: int, bad: dict[int, str]) -> tuple[np.ndarray, np.ndarray]:
    """Per image: codes outside [-128, 0]; pixels not a distribution or not decodable."""
    out_of_range, invalid = [], []
    for pos, codes in ig.scan(arr, bad):  # codes (n, C, H, W) int8
        if not len(pos):
            continue
        out_of_range.append(pos[((codes < CODE_MIN) | (codes > CODE_MAX)).any(axis=(1, 2, 3))])
        all_zero = (codes == 0).all(axis=1).any(axis=(1, 2))  # sum of probabilities > 1
        decoded = decode_logprobs(codes, axis=1)
        arg = decoded.argmax(axis=1)  # (n, H, W)
        broken = ~np.isfinite(decoded).all(axis=(1, 2, 3)) | (arg >= n_classes).any(axis=(1, 2))
        invalid.append(pos[all_zero | broken])
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64)  # noqa: E731
    return cat(out_of_range), cat(invalid)


def _label_soft(group: zarr.Group, attrs: dict, ids: list[str], problems: list[str]) -> None:
    n, chw = int(attrs["n_images"]), (len(attrs["classes"]), *attrs["size"])
    for v in attrs.get("variants", []):
        arr = _array(group, f"soft/{v}", "int8", (n, *chw), problems)
        if arr is None:
            continue
        bad: dict[int, str] = {}
        bad_range, bad_decode = _soft_problems(arr, chw[0], bad)
        _unreadable(f"soft/{v}", bad, ids, problems)
        if bad_range.size:
            problems.append(
                f"variant '{v}': {bad_range.size} image(s) with codes > 0: {_first(ids, bad_range)}"
            )
        if bad_decode.size:
            problems.append(
                f"variant '{v}': {bad_decode.size} image(s) with pixels that decode to no valid "
                f"class distribution (unwritten or zeroed): {_first(ids, bad_decode)}"
            )


def _label_stats(
    group: zarr.Group, attrs: dict, ids: list[str], problems: list[str]
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    n = int(attrs["n_images"])
    for s in attrs.get("stat_names", []):
        arr = _array(group, f"stats/{s}", "float64", (n,), problems)
        if arr is None:
            continue
        pos, values = _read_all(arr, f"stats/{s}", ids, problems)
        bad = pos[~np.isfinite(values)]
        if bad.size:
            problems.append(f"statistic '{s}': {bad.size} image(s) not finite: {_first(ids, bad)}")
        good = values[np.isfinite(values)]
        summary[s] = {"mean": float(good.mean()) if good.size else None, "n_finite": int(good.size)}
    return summary


def _check_labels(where: loc.Location, attrs: dict, problems: list[str]) -> dict[str, Any]:
    _check_version(attrs, LABEL_SCHEMA, LABEL_SCHEMA_VERSION, problems)
    if attrs.get("status") != "complete":
        problems.append(
            f"status is {attrs.get('status')!r}, not 'complete' (unfinished; rerun `plc "
            "precompute`)"
        )
    group = where.open_group()
    n = int(attrs.get("n_images", -1))
    ids = [f"#{i}" for i in range(n)]
    ids_arr = _array(group, "ids", "str", (n,), problems)
    if ids_arr is not None:
        pos, values = _read_all(ids_arr, "ids", ids, problems)
        ids = values.tolist() if len(pos) == n else ids
    if len(set(ids)) != len(ids):
        problems.append("array 'ids' has duplicates")
    done = _array(group, "done", "bool", (n,), problems)
    if done is not None:
        pos, flags = _read_all(done, "done", ids, problems)
        missing = pos[~np.asarray(flags, dtype=bool)]
        if missing.size:
            problems.append(
                f"{missing.size} of {n} image(s) not marked done: {_first(ids, missing)}"
            )
    _label_soft(group, attrs, ids, problems)
    stats = _label_stats(group, attrs, ids, problems)
    keys = ("status", "dataset_name", "n_images", "size", "classes", "variants", "stat_names",
            "shard_size", "encoding", "manifest_sha256", "created")  # fmt: skip
    return {"kind": "labels", **{k: attrs.get(k) for k in keys}, "stats": stats}


_CHECKERS: dict[str, Callable[[loc.Location, dict, list[str]], dict[str, Any]]] = {
    DATASET_SCHEMA: _check_dataset,
    LABEL_SCHEMA: _check_labels,
}


def verify_store(path: str | Path) -> dict[str, Any]:
    """Run every check on a dataset or label store (detected from its attrs).

    Both: every chunk read (crc32c of chunks and shard indexes), checksums present in every
    array's codecs. Dataset: arrays, manifest hash, mask values < n classes, split counts.
    Labels: status, all images done, every variant's codes decode to valid class
    distributions, stats finite. ``path`` may be a directory or a read-only fsspec URL.

    Returns:
        A summary dict (``kind``, ``path``, sizes, counts, hashes, ``bytes`` on disk for a
        local store).

    Raises:
        StoreError: one error listing every problem found, one per line, each unreadable
            image named with its array and the reason.
    """
    where = loc.locate(path)
    attrs = loc.read_attrs(where, "store")
    checker = _CHECKERS.get(attrs.get("schema"))
    if checker is None:
        raise StoreError(
            f"{where} is not a plc-kd store (schema {attrs.get('schema')!r}; known: "
            f"{', '.join(_CHECKERS)})."
        )
    problems: list[str] = []
    summary = checker(where, attrs, problems)
    if problems:
        raise StoreError.from_problems(
            f"store {where} failed verification with {len(problems)} problem(s):", problems
        )
    size = where.nbytes()
    return {"path": str(where), "schema": attrs["schema"], "schema_version": attrs["schema_version"],
            **summary, **({"bytes": size} if size is not None else {})}  # fmt: skip


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable multi-line summary of :func:`verify_store`'s result (for `plc verify`)."""
    kind = {"dataset": "dataset store", "labels": "label store"}.get(summary.get("kind"), "store")
    lines = [f"{kind} {summary.get('path')}: OK"]
    for key, value in summary.items():
        if key in ("kind", "path"):
            continue
        if key == "bytes":
            value = f"{value:,} ({value / 2**20:.1f} MiB)"
        elif key == "manifest_sha256" and isinstance(value, str):
            value = value[:12]
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "-"
        lines.append(f"  {key:<16} {value}")
    return "\n".join(lines)
