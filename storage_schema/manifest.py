"""The Parquet manifest: one row per image of a prepared dataset, in store order.

An optional ``fold`` column (int32, one cross-validation fold per image, written by
``plc prepare --folds K``) follows the base columns when present; a manifest without it is
unchanged (same columns, same hash), so no schema version changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa

from storage_schema._common import is_sha256
from storage_schema.errors import StoreError

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")

MANIFEST_SCHEMA: pa.Schema = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("image_path", pa.string(), nullable=False),
        pa.field("mask_path", pa.string(), nullable=True),
        pa.field("orig_height", pa.int32(), nullable=False),
        pa.field("orig_width", pa.int32(), nullable=False),
        pa.field("image_sha256", pa.string(), nullable=False),
        pa.field("mask_sha256", pa.string(), nullable=True),
        pa.field("fg_fraction", pa.float32(), nullable=False),
        pa.field("empty_mask", pa.bool_(), nullable=False),
        pa.field("flags", pa.string(), nullable=False),
    ]
)
_FIELDS: tuple[str, ...] = tuple(MANIFEST_SCHEMA.names)
FOLD_FIELD: pa.Field = pa.field("fold", pa.int32(), nullable=False)  # optional column


def _schema(with_fold: bool) -> pa.Schema:
    return MANIFEST_SCHEMA.append(FOLD_FIELD) if with_fold else MANIFEST_SCHEMA


def _is_int(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)


def _rel_path(v: object) -> str | None:
    if not isinstance(v, str) or not v:
        return "must be a non-empty string"
    p = PurePosixPath(v)
    if p.is_absolute() or ".." in p.parts or "\\" in v:
        return f"must be a POSIX path relative to the dataset root without '..', got {v!r}"
    return None


def _opt(check: Callable[[object], str | None]) -> Callable[[object], str | None]:
    return lambda v: None if v is None else check(v)


def _check_id(v: object) -> str | None:
    return None if isinstance(v, str) and v else f"must be a non-empty string, got {v!r}"


def _check_split(v: object) -> str | None:
    return None if v in SPLITS else f"must be one of {', '.join(SPLITS)}, got {v!r}"


def _check_dim(v: object) -> str | None:
    ok = _is_int(v) and 0 < int(v) < 2**31
    return None if ok else f"must be a positive int, got {v!r}"


def _check_sha(v: object) -> str | None:
    return None if is_sha256(v) else f"must be a lowercase 64-digit hex SHA-256, got {v!r}"


def _check_fraction(v: object) -> str | None:
    ok = isinstance(v, float | int | np.floating | np.integer) and not isinstance(v, bool)
    ok = ok and math.isfinite(float(v)) and 0.0 <= float(v) <= 1.0
    return None if ok else f"must be a float in [0, 1], got {v!r}"


def _check_bool(v: object) -> str | None:
    return None if isinstance(v, bool | np.bool_) else f"must be a bool, got {v!r}"


def _check_flags(v: object) -> str | None:
    return (
        None if isinstance(v, str) else f"must be a comma-separated string ('' if none), got {v!r}"
    )


_CHECKS: dict[str, Callable[[object], str | None]] = {
    "id": _check_id,
    "split": _check_split,
    "image_path": _rel_path,
    "mask_path": _opt(_rel_path),
    "orig_height": _check_dim,
    "orig_width": _check_dim,
    "image_sha256": _check_sha,
    "mask_sha256": _opt(_check_sha),
    "fg_fraction": _check_fraction,
    "empty_mask": _check_bool,
    "flags": _check_flags,
}


def _check_fold(v: object) -> str | None:
    ok = _is_int(v) and 0 <= int(v) < 2**31
    return None if ok else f"must be a non-negative int, got {v!r}"


def _record_problems(rec: Any, with_fold: bool = False) -> list[str]:
    """Every problem of one record, each naming the field."""
    if not isinstance(rec, dict):
        return [f"must be a dict, got {type(rec).__name__}"]
    fields = (*_FIELDS, "fold") if with_fold else _FIELDS
    missing = [f for f in fields if f not in rec]
    unknown = sorted(set(rec) - set(fields))
    problems = [f"field '{f}' is missing" for f in missing]
    problems += [f"field '{f}' is not in the manifest schema" for f in unknown]
    for name, check in _CHECKS.items():
        msg = check(rec[name]) if name in rec else None
        if msg:
            problems.append(f"field '{name}' {msg}")
    if with_fold and "fold" in rec and (msg := _check_fold(rec["fold"])):
        problems.append(f"field 'fold' {msg}")
    if not problems and (rec["mask_path"] is None) != (rec["mask_sha256"] is None):
        problems.append("fields 'mask_path' and 'mask_sha256' must be both set or both None")
    if not problems and rec["empty_mask"] and float(rec["fg_fraction"]) != 0.0:
        problems.append("field 'empty_mask' is True but 'fg_fraction' is not 0")
    return problems


def build_manifest(records: list[dict]) -> pa.Table:
    """Validate manifest records and build the table in ``MANIFEST_SCHEMA``.

    Args:
        records: one dict per image, in store order, with exactly the schema's fields; when
            the first record has a ``fold``, every record must have one.

    Returns:
        A ``pa.Table`` with ``MANIFEST_SCHEMA`` (plus ``fold`` last when given) and
        ``len(records)`` rows.

    Raises:
        StoreError: listing every bad record and field (and duplicate ids), one per line.
    """
    problems: list[str] = []
    seen: dict[str, int] = {}
    with_fold = bool(records) and isinstance(records[0], dict) and "fold" in records[0]
    for i, rec in enumerate(records):
        label = f"record {i}" + (f" (id {rec.get('id')!r})" if isinstance(rec, dict) else "")
        problems += [f"{label}: {p}" for p in _record_problems(rec, with_fold)]
        rid = rec.get("id") if isinstance(rec, dict) else None
        if isinstance(rid, str) and rid in seen:
            problems.append(f"{label}: field 'id' duplicates record {seen[rid]}")
        elif isinstance(rid, str):
            seen[rid] = i
    if problems:
        raise StoreError.from_problems(
            f"manifest has {len(problems)} problem(s); fix the records:", problems
        )
    schema = _schema(with_fold)
    columns = {f: [rec[f] for rec in records] for f in schema.names}
    columns["empty_mask"] = [bool(v) for v in columns["empty_mask"]]
    if with_fold:
        columns["fold"] = [int(v) for v in columns["fold"]]
    return pa.table(columns, schema=schema)


def check_manifest_table(table: pa.Table, what: str = "manifest") -> pa.Table:
    """Return ``table`` cast to ``MANIFEST_SCHEMA`` column order (then ``fold`` when it has
    one); refuse missing columns."""
    if not isinstance(table, pa.Table):
        raise StoreError(
            f"{what} must be a pyarrow Table built by build_manifest, got {type(table).__name__}."
        )
    missing = [f for f in _FIELDS if f not in table.column_names]
    if missing:
        raise StoreError(
            f"{what} lacks column(s) {', '.join(missing)}; rebuild it with build_manifest."
        )
    schema = _schema("fold" in table.column_names)
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as err:
        raise StoreError(
            f"{what} does not match the manifest schema ({err}); rebuild it with build_manifest."
        ) from err


def manifest_sha256(table: pa.Table) -> str:
    """SHA-256 (hex) of the manifest content, independent of chunking and column order.

    The hash covers the schema's field names and types and every value, column by column in
    schema order, through a canonical JSON text; a ``fold`` column, when present, is covered
    too (a manifest without one hashes as before it existed).
    """
    t = check_manifest_table(table)
    h = hashlib.sha256()
    header = [[f.name, str(f.type)] for f in t.schema]
    h.update(json.dumps(header, separators=(",", ":")).encode())
    for name in t.schema.names:
        values = t.column(name).to_pylist()
        h.update(json.dumps([name, values], separators=(",", ":")).encode())
    return h.hexdigest()


def manifest_folds(table: pa.Table) -> list[int] | None:
    """The ``fold`` of every image in store order, or None for a manifest without folds."""
    return table.column("fold").to_pylist() if "fold" in table.column_names else None
