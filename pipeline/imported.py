"""Imported teachers: T's probability maps, computed elsewhere, as a lookup by image id.

``plc import-teacher`` turns a folder of probability maps (nnU-Net v2's
``--save_probabilities`` output, ``.npy``/``.npz`` arrays or PNGs of p(foreground)) into
this artifact; ``--teacher`` of ``plc train-assistant`` and ``plc precompute`` accepts it
wherever it takes a checkpoint (``pipeline.torchscript.build_teacher`` dispatches on the
kind). Like the checkpoint format (:mod:`pipeline.checkpoint`), the format of this model
artifact lives beside the code that reads it; its arrays use the stores' checksummed codecs
(:func:`storage_schema.integrity.codecs`).

The artifact is a Zarr v3 group (a folder, at the conventional teacher path
``models/<ds>/teacher.pt`` by default)::

    probs  (N, C, H, W) float32   T's probabilities at the dataset store's size, each pixel
                                  summing to 1; one image per chunk, 64 per shard, crc32c
    ids    (N,) str               the image id of each row (manifest ids, manifest order)
    attrs  schema, schema_version, dataset_name, manifest_sha256, classes, size, kind,
           layout, source (folder, options, resampling), files_sha256 (per input file),
           digest, created, package_version

float32, not float16: the label store keeps log-probabilities down to e^-16 ≈ 1e-7
(int8 at scale 1/8), and float16 holds p < 6e-5 only as subnormals (p = 1e-6 off by 6 %), so
float16 would bend Y^I where the store can still tell values apart. ``digest`` is one
SHA-256 over the content (attributes but ``digest`` and ``created``, ids, probabilities):
provenance records it where a checkpoint records its file's SHA-256.

An imported teacher is no network: it has no features (SC reads an assistant's) and is
asked for the probabilities of images by id (:meth:`ImportedTeacher.probabilities`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

SCHEMA = "plc-kd/imported-teacher"
SCHEMA_VERSION = 1
SHARD_IMAGES = 64
_MAX_NAMED = 10  # ids named in one message before "(+n more)"


def is_imported(path: str | Path) -> bool:
    """True when ``path`` is a folder holding an imported teacher (its root ``zarr.json``
    names :data:`SCHEMA`); cheap: only that file is read."""
    meta = Path(path) / "zarr.json"
    if not meta.is_file():
        return False
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return False
    return isinstance(attrs, dict) and attrs.get("schema") == SCHEMA


def content_digest(attrs: dict, ids: Sequence[str], probs: np.ndarray) -> str:
    """SHA-256 of an imported teacher's content: ``attrs`` (without ``digest`` and
    ``created``) as sorted JSON, the ids, and ``probs`` as C-order little-endian float32."""
    h = hashlib.sha256()
    kept = {k: v for k, v in attrs.items() if k not in ("digest", "created")}
    h.update(json.dumps(kept, sort_keys=True, separators=(",", ":")).encode())
    h.update(b"\0".join(i.encode() for i in ids))
    h.update(np.ascontiguousarray(probs, dtype="<f4").tobytes())
    return h.hexdigest()


def write_imported(path: Path, probs: np.ndarray, ids: Sequence[str], attrs: dict) -> str:
    """Write an imported teacher atomically (temporary sibling, then rename) over ``path``.

    Args:
        path: the artifact folder; an existing one is replaced (the caller decides whether
            it may be).
        probs: (N, C, H, W) float32 probabilities, every pixel summing to 1.
        ids: the N image ids.
        attrs: JSON-able description (:data:`SCHEMA`, version and ``digest`` are added).

    Returns:
        The content digest (:func:`content_digest`).
    """
    import zarr

    from storage_schema._common import consolidate, publish_dir, remove, unique_tmp
    from storage_schema.integrity import codecs

    if probs.ndim != 4 or probs.dtype != np.float32 or len(probs) != len(ids):
        raise ValueError(f"probs must be (N, C, H, W) float32 for {len(ids)} ids, got "
                         f"{probs.dtype} {probs.shape}.")  # fmt: skip
    attrs = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **attrs}
    attrs = json.loads(json.dumps(attrs, allow_nan=False))  # refuses what JSON cannot hold
    attrs["digest"] = content_digest(attrs, ids, probs)
    n, c, h, w = probs.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_tmp(path)
    try:
        group = zarr.open_group(tmp, mode="w")
        arr = group.create_array(
            "probs", shape=probs.shape, dtype="float32", chunks=(1, c, h, w),
            shards=(min(SHARD_IMAGES, n), c, h, w), compressors=codecs(), fill_value=0.0,
            dimension_names=("image", "class", "y", "x"), config={"write_empty_chunks": True},
        )  # fmt: skip
        arr[:] = probs
        names = group.create_array("ids", shape=(n,), dtype=str, chunks=(n,),
                                   compressors=codecs(), dimension_names=("image",))  # fmt: skip
        names[:] = np.asarray(list(ids), dtype=str)
        group.attrs.update(attrs)
        consolidate(tmp)
        publish_dir(tmp, path, overwrite=True)
    except BaseException:
        remove(tmp)
        raise
    return attrs["digest"]


@dataclass(frozen=True)
class ImportedMaps:
    """An opened, validated imported teacher (``probs`` read lazily, every chunk checked)."""

    path: Path
    attrs: dict[str, Any]
    ids: list[str]
    probs: Any  # zarr.Array (N, C, H, W) float32

    @property
    def digest(self) -> str:
        return self.attrs["digest"]

    def summary(self) -> dict[str, Any]:
        """What provenance records about the import (the per-file SHA-256 stay in the
        artifact; its digest covers them)."""
        keys = ("kind", "layout", "source", "dataset_name", "manifest_sha256", "digest")
        return {k: self.attrs.get(k) for k in keys} | {"images": len(self.ids)}


def open_imported(path: str | Path) -> ImportedMaps:
    """Open and validate the imported teacher at ``path``.

    Raises:
        ValueError: not an imported teacher of this schema version, or its arrays do not
            agree with its attributes (one sentence, naming the path and what to do).
    """
    import zarr

    from storage_schema.integrity import has_checksum

    path = Path(path)
    redo = "run `plc import-teacher` again to rebuild it"
    if not is_imported(path):
        raise ValueError(f"{path} is not an imported teacher (no {SCHEMA} zarr.json); {redo}.")
    group = zarr.open_group(path, mode="r")
    attrs = dict(group.attrs)
    if attrs.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"imported teacher {path} has schema version "
                         f"{attrs.get('schema_version')!r}, this code reads {SCHEMA_VERSION}; "
                         f"{redo}.")  # fmt: skip
    if "probs" not in group or "ids" not in group:
        raise ValueError(f"imported teacher {path} lacks its probs or ids array; {redo}.")
    probs, ids = group["probs"], [str(i) for i in np.asarray(group["ids"][:])]
    want = (len(ids), len(attrs.get("classes", [])), *attrs.get("size", []))
    if str(probs.dtype) != "float32" or tuple(probs.shape) != want or not has_checksum(probs):
        raise ValueError(f"imported teacher {path} holds probs {probs.dtype} "
                         f"{tuple(probs.shape)}, expected checksummed float32 {want}; {redo}.")  # fmt: skip
    return ImportedMaps(path, attrs, ids, probs)


def name_ids(ids: Sequence[str]) -> str:
    """``'a', 'b', ... (+n more)``."""
    named = ", ".join(repr(i) for i in ids[:_MAX_NAMED])
    return named + (f" (+{len(ids) - _MAX_NAMED} more)" if len(ids) > _MAX_NAMED else "")


class ImportedTeacher(nn.Module):
    """T as a lookup: the imported probabilities of images, by id (no weights, no features).

    Kept an ``nn.Module`` so that the team moves and evaluates its three members alike;
    calling it on images is refused (it cannot know which images they are).
    """

    def __init__(self, maps: ImportedMaps) -> None:
        super().__init__()
        self.maps = maps
        self.rows = {i: r for r, i in enumerate(maps.ids)}

    @property
    def path(self) -> Path:
        return self.maps.path

    def forward(self, x: Tensor) -> Tensor:
        raise TypeError(
            f"imported teacher {self.path} is a lookup by image id, not a network: ask "
            "probabilities(ids) for the images' maps."
        )

    def missing(self, ids: Sequence[str]) -> list[str]:
        """The ``ids`` this teacher holds no map of."""
        return [i for i in ids if i not in self.rows]

    def fit_problems(
        self, manifest_sha256: str, classes: Sequence[str], size: Sequence[int], ids: Sequence[str]
    ) -> list[str]:
        """What keeps this import from serving a dataset store's images ``ids``.

        Args:
            manifest_sha256: the store's manifest digest (the import records the one it was
                made for).
            classes: the store's class names.
            size: the store's (H, W).
            ids: the images it must cover (e.g. the train split of a fold).

        Returns:
            One phrase per problem (empty when it fits).
        """
        a = self.maps.attrs
        out = []
        if a.get("manifest_sha256") != manifest_sha256:
            out.append(f"it was imported for the manifest {str(a.get('manifest_sha256'))[:12]}…, "
                       f"not this store's {manifest_sha256[:12]}…")  # fmt: skip
        if list(a.get("classes", [])) != list(classes):
            out.append(f"its classes {a.get('classes')} are not the store's {list(classes)}")
        if list(a.get("size", [])) != list(size):
            out.append(f"its maps are {a.get('size')}, the store's images {list(size)}")
        if missing := self.missing(ids):
            out.append(f"it holds no map of {len(missing)} image(s) it must cover: "
                       f"{name_ids(missing)}")  # fmt: skip
        return out

    def probabilities(self, ids: Sequence[str], device: torch.device | str = "cpu") -> Tensor:
        """(B, C, H, W) float32 probabilities of the images ``ids``, on ``device``.

        Raises:
            ValueError: an id this teacher holds no map of (named).
        """
        if missing := self.missing(ids):
            raise ValueError(f"imported teacher {self.path} holds no map of {name_ids(missing)}; "
                             "import them (`plc import-teacher`) or pass another --teacher.")  # fmt: skip
        rows = np.asarray([self.rows[i] for i in ids], dtype=np.int64)
        unique, inverse = np.unique(rows, return_inverse=True)  # sorted, each row read once
        read = np.asarray(self.maps.probs.oindex[unique])  # (U, C, H, W)
        return torch.from_numpy(read[inverse]).to(device)  # (B, C, H, W), in ``ids``' order
