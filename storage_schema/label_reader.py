"""Reading a published label store: validation on open, codes and decoded log-probs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from storage_schema import _common as c
from storage_schema.encoding import decode_logprobs
from storage_schema.errors import StoreError

logger = logging.getLogger(__name__)

LABEL_SCHEMA = "plc-kd/labels"
LABEL_SCHEMA_VERSION = 1
VARIANTS: tuple[str, ...] = (
    "teacher",
    "teacher_sc",
    "teacher_fa",
    "teacher_ba",
    "teacher_fa_ba",
    "plc",
)

Index = int | np.integer | slice | np.ndarray | list


def check_label_attrs(attrs: Mapping[str, Any], path: Path) -> None:
    """Refuse attrs of another schema or schema version, in one sentence naming ``path``."""
    if attrs.get("schema") != LABEL_SCHEMA:
        raise StoreError(
            f"{path} is not a plc-kd label store (schema {attrs.get('schema')!r}, expected "
            f"{LABEL_SCHEMA!r})."
        )
    if attrs.get("schema_version") != LABEL_SCHEMA_VERSION:
        raise StoreError(
            f"label store {path} has schema version {attrs.get('schema_version')!r} but this "
            "code reads version "
            f"{LABEL_SCHEMA_VERSION}; rerun `plc precompute --force`."
        )


def label_arrays(group: zarr.Group, attrs: Mapping[str, Any], path: Path) -> dict[str, zarr.Array]:
    """The store's arrays by key (``ids``, ``done``, ``soft/<v>``, ``stats/<s>``), shape-checked."""
    n = int(attrs["n_images"])
    chw = (len(attrs["classes"]), *(int(v) for v in attrs["size"]))
    expected = {"ids": (n,), "done": (n,)}
    expected |= {f"soft/{v}": (n, *chw) for v in attrs["variants"]}
    expected |= {f"stats/{s}": (n,) for s in attrs["stat_names"]}
    arrays: dict[str, zarr.Array] = {}
    for key, shape in expected.items():
        arr = group.get(key)
        if not isinstance(arr, zarr.Array):
            raise StoreError(
                f"label store {path} has no array '{key}'; rerun `plc precompute --force`."
            )
        if tuple(arr.shape) != shape:
            raise StoreError(
                f"label store {path} array '{key}' has shape {tuple(arr.shape)}, expected {shape}; "
                "rerun `plc precompute --force`."
            )
        arrays[key] = arr
    return arrays


class LabelStore:
    """An opened, validated, complete label store; reads are lazy per image."""

    def __init__(self, path: Path, group: zarr.Group, attrs: dict[str, Any]) -> None:
        self.path = path
        self.attrs = attrs
        self._arrays = label_arrays(group, attrs, path)
        self.ids: list[str] = self._arrays["ids"][:].tolist()
        self.variants: tuple[str, ...] = tuple(attrs["variants"])
        self.classes: list[str] = list(attrs["classes"])
        self.size: tuple[int, int] = (int(attrs["size"][0]), int(attrs["size"][1]))
        self.provenance: dict[str, Any] = dict(attrs.get("provenance") or {})
        self.manifest_sha256: str = attrs["manifest_sha256"]
        self.dataset_name: str = attrs["dataset_name"]
        self._index = {image_id: i for i, image_id in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"LabelStore({str(self.path)!r}, n={len(self)}, variants={self.variants})"

    def index_of(self, image_id: str) -> int:
        """Position of ``image_id`` in the store (manifest order)."""
        try:
            return self._index[image_id]
        except KeyError:
            raise StoreError(f"image id {image_id!r} is not in label store {self.path}.") from None

    def _soft(self, variant: str) -> zarr.Array:
        if variant not in self.variants:
            raise StoreError(
                f"variant {variant!r} is not in label store {self.path}; choose one of "
                f"{', '.join(self.variants)}."
            )
        return self._arrays[f"soft/{variant}"]

    def read_codes(self, variant: str, index: Index) -> np.ndarray:
        """int8 codes: ``(C, H, W)`` for an int index, ``(n, C, H, W)`` for a slice or array."""
        arr = self._soft(variant)
        if isinstance(index, int | np.integer | slice):
            return np.asarray(arr[index])
        idx = np.asarray(index)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise IndexError(f"a boolean index must have shape ({len(self)},), got {idx.shape}")
            idx = np.flatnonzero(idx)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(
                f"index must be an int, a slice or a 1-D int array, got {idx.dtype} {idx.shape}"
            )
        if idx.size == 0:
            return np.empty((0, *arr.shape[1:]), dtype=np.int8)
        if idx.min() < -len(self) or idx.max() >= len(self):
            raise IndexError(f"index out of range for a label store of {len(self)} images")
        return np.asarray(arr.oindex[np.where(idx < 0, idx + len(self), idx)])

    def read(self, variant: str, index: Index) -> np.ndarray:
        """Decoded float32 log-probabilities, shaped like :meth:`read_codes`."""
        return decode_logprobs(self.read_codes(variant, index), axis=-3)

    def stat_names(self) -> list[str]:
        """Names of the stored per-image statistics."""
        return list(self.attrs["stat_names"])

    def stat(self, name: str) -> np.ndarray:
        """Per-image statistic ``name`` as a ``(N,)`` float64 array."""
        if name not in self.attrs["stat_names"]:
            choices = ", ".join(self.attrs["stat_names"]) or "none stored"
            raise StoreError(
                f"statistic {name!r} is not in label store {self.path}; choose one of: {choices}."
            )
        return np.asarray(self._arrays[f"stats/{name}"][:], dtype=np.float64)


def open_label_store(path: str | Path, *, manifest_sha256: str | None = None) -> LabelStore:
    """Open and validate a published label store.

    Args:
        path: the store directory.
        manifest_sha256: the dataset manifest's hash; the store must have been built for it.

    Raises:
        StoreError: one sentence naming the path and the mismatch, for a missing path, another
            schema or version, an unfinished store or another manifest.
    """
    path = Path(path)
    tmp = c.writing_path(path)
    if not path.exists() and tmp.exists():
        raise StoreError(
            f"label store {path} was not finished (status 'writing', found {tmp}); "
            "rerun `plc precompute` (--resume continues it)."
        )
    attrs = c.read_attrs(path, "label store")
    check_label_attrs(attrs, path)
    if attrs.get("status") != "complete":
        raise StoreError(
            f"label store {path} was not finished (status {attrs.get('status')!r}); rerun `plc "
            "precompute`."
        )
    stored = str(attrs.get("manifest_sha256"))
    if manifest_sha256 is not None and stored != manifest_sha256:
        raise StoreError(
            f"label store {path} was built for manifest {stored[:12]} but the dataset has "
            f"{manifest_sha256[:12]}; rerun `plc precompute` for this dataset."
        )
    return LabelStore(path, zarr.open_group(path, mode="r"), attrs)
