"""Reading a published label store: validation on open, codes and decoded log-probs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from storage_schema import _common as c
from storage_schema.direct import DirectArray
from storage_schema.encoding import decode_logprobs
from storage_schema.errors import StoreError
from storage_schema.integrity import Index, read_checked
from storage_schema.location import Generation, Location, Pin, locate, open_consistent, read_attrs

logger = logging.getLogger(__name__)

LABEL_SCHEMA = "plc-kd/labels"
LABEL_SCHEMA_VERSION = 2  # 2: crc32c on every chunk, dimension_names, consolidated


def check_label_attrs(attrs: Mapping[str, Any], path: Path | str) -> None:
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
            f"{LABEL_SCHEMA_VERSION} (version 2 added crc32c checksums); rerun `plc precompute "
            "--force`."
        )


def label_arrays(
    group: zarr.Group, attrs: Mapping[str, Any], path: Path | str
) -> dict[str, zarr.Array]:
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
    """An opened, validated, complete label store; reads are lazy per image.

    Every read checks the chunks' crc32c (a corrupt one raises a StoreError naming the
    store, the array and the image) and that the store was not republished since it was
    opened. A pickled store (e.g. sent to a DataLoader worker) reopens its own handles.
    """

    def __init__(
        self, path: Path | str, group: zarr.Group, attrs: dict[str, Any], pin: Pin | None = None
    ) -> None:
        self.path = path
        self.attrs = attrs
        self.pin = pin
        self._arrays = label_arrays(group, attrs, path)
        self._what = f"label store {path}"
        n = int(attrs["n_images"])
        ids = read_checked(self._arrays["ids"], "ids", slice(None), what=self._what, ids=[])
        self.ids: list[str] = ids.tolist() if len(ids) == n else [f"#{i}" for i in range(n)]
        self.variants: tuple[str, ...] = tuple(attrs["variants"])
        self.classes: list[str] = list(attrs["classes"])
        self.size: tuple[int, int] = (int(attrs["size"][0]), int(attrs["size"][1]))
        self.provenance: dict[str, Any] = dict(attrs.get("provenance") or {})
        self.manifest_sha256: str = attrs["manifest_sha256"]
        self.dataset_name: str = attrs["dataset_name"]
        self._index = {image_id: i for i, image_id in enumerate(self.ids)}
        self._direct: dict[str, DirectArray | None] = {}  # per array, built on first read

    def __reduce__(self) -> tuple[Any, ...]:
        generation = self.pin.generation if self.pin is not None else None
        return (_reopen, (self.path, self.manifest_sha256, generation))

    def _checked(self, key: str, index: Index) -> np.ndarray:
        arr = self._arrays[key]
        if key not in self._direct:  # a local store: runs read from the shard files
            local = self.path if isinstance(self.path, Path) else None
            self._direct[key] = DirectArray.of(arr, None if local is None else local / key)
        return read_checked(
            arr, key, index, what=self._what, ids=self.ids, pin=self.pin, direct=self._direct[key]
        )

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
        """int8 codes: ``(C, H, W)`` for an int index, ``(n, C, H, W)`` for a slice or array.

        Raises:
            StoreError: an unknown variant, a corrupt chunk (naming the image ids), or a store
                republished since it was opened.
            IndexError: an out-of-range or malformed index.
        """
        self._soft(variant)
        return self._checked(f"soft/{variant}", index)

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
        return np.asarray(self._checked(f"stats/{name}", slice(None)), dtype=np.float64)


def _open(where: Location, manifest_sha256: str | None) -> LabelStore:
    shown = where.local if where.local is not None else str(where)
    if where.local is not None:
        tmp = c.writing_path(where.local)
        if not where.local.exists() and tmp.exists():
            raise StoreError(
                f"label store {shown} was not finished (status 'writing', found {tmp}); "
                "rerun `plc precompute` (--resume continues it)."
            )
    attrs = read_attrs(where, "label store")
    check_label_attrs(attrs, shown)
    if attrs.get("status") != "complete":
        raise StoreError(
            f"label store {shown} was not finished (status {attrs.get('status')!r}); rerun `plc "
            "precompute`."
        )
    stored = str(attrs.get("manifest_sha256"))
    if manifest_sha256 is not None and stored != manifest_sha256:
        raise StoreError(
            f"label store {shown} was built for manifest {stored[:12]} but the dataset has "
            f"{manifest_sha256[:12]}; rerun `plc precompute` for this dataset."
        )
    return LabelStore(shown, where.open_group(), attrs)


def open_label_store(path: str | Path, *, manifest_sha256: str | None = None) -> LabelStore:
    """Open and validate a published label store: a local directory or a read-only URL.

    Args:
        path: the store directory, or an ``http(s)://`` (any fsspec) URL.
        manifest_sha256: the dataset manifest's hash; the store must have been built for it.

    Raises:
        StoreError: one sentence naming the path and the mismatch, for a missing path, another
            schema or version, an unfinished store or another manifest.
    """
    where = locate(path)
    store, pin = open_consistent(where, "label store", lambda: _open(where, manifest_sha256))
    store.pin = pin
    return store


def _reopen(path: Path | str, manifest_sha: str, generation: Generation) -> LabelStore:
    """Unpickling: open the same store again (own handles), refusing a republished one."""
    store = open_label_store(path, manifest_sha256=manifest_sha)
    if generation is not None and store.pin is not None and store.pin.generation != generation:
        raise StoreError(
            f"label store {path} was replaced (republished) since it was first opened; "
            "rerun the command to read the new store."
        )
    return store
