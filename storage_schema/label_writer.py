"""Writing an unfinished label store shard by shard, then publishing it by rename.

Concurrency: a shard's soft-label codes are one shard file per variant, and its ``done``
flags and statistics are one chunk each (their chunk size is the shard size), so writers
that own different shards never touch the same file. Within a shard, ``done`` is written
last: an interrupted write leaves the shard pending, never half-marked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from storage_schema import _common as c
from storage_schema.encoding import CODE_MAX, encode_logprobs
from storage_schema.errors import StoreError
from storage_schema.label_reader import check_label_attrs, label_arrays

logger = logging.getLogger(__name__)

SCRATCH = "scratch"  # inside <path>.writing: notes a resumed run needs; removed at publish


class LabelStoreWriter:
    """A writer on ``<path>.writing``; create it with ``create_label_store`` or :meth:`open`."""

    def __init__(
        self, tmp_path: Path, group: zarr.Group, attrs: dict[str, Any], overwrite: bool
    ) -> None:
        self.tmp_path = tmp_path
        self.path = tmp_path.with_name(tmp_path.name[: -len(c.WRITING_SUFFIX)])
        self.attrs = attrs
        self.overwrite = overwrite
        self._group = group
        self._arrays = label_arrays(group, attrs, tmp_path)
        self.ids: list[str] = self._arrays["ids"][:].tolist()
        self.variants: tuple[str, ...] = tuple(attrs["variants"])
        self.stat_names: tuple[str, ...] = tuple(attrs["stat_names"])
        self.shard_size = int(attrs["shard_size"])
        self.chw: tuple[int, int, int] = (len(attrs["classes"]), *(int(v) for v in attrs["size"]))

    @classmethod
    def open(cls, tmp_path: str | Path, *, overwrite: bool = False) -> LabelStoreWriter:
        """Re-open an existing unfinished store (e.g. in another process or a Dask worker).

        Args:
            tmp_path: the ``<path>.writing`` directory.
            overwrite: allow :meth:`publish` to replace a published store at ``path``.
        """
        tmp = Path(tmp_path)
        if not tmp.name.endswith(c.WRITING_SUFFIX):
            raise StoreError(
                f"{tmp} is not an unfinished label store path (its name must end in "
                f"{c.WRITING_SUFFIX!r})."
            )
        attrs = c.read_attrs(tmp, "unfinished label store")
        check_label_attrs(attrs, tmp)
        if attrs.get("status") != "writing":
            raise StoreError(
                f"label store {tmp} has status {attrs.get('status')!r}, not 'writing'; it "
                "cannot be written."
            )
        return cls(tmp, zarr.open_group(tmp, mode="r+"), attrs, overwrite)

    def __len__(self) -> int:
        return len(self.ids)

    def shard_bounds(self) -> list[tuple[int, int]]:
        """``[(start, stop)]`` covering ``0..N`` in ``shard_size`` steps (the last may be short)."""
        n, s = len(self.ids), self.shard_size
        return [(a, min(a + s, n)) for a in range(0, n, s)]

    def pending_shards(self) -> list[tuple[int, int]]:
        """The shards with at least one image not marked done."""
        done = np.asarray(self._arrays["done"][:], dtype=bool)
        return [(a, b) for a, b in self.shard_bounds() if not done[a:b].all()]

    def _shard_stop(self, start: int, n: int) -> int:
        stop = dict(self.shard_bounds()).get(start)
        if stop is None or stop - start != n:
            raise StoreError(
                f"writes must be whole shards: images [{start}, {start + n}) of {self.tmp_path} "
                "do not form one "
                f"shard of shard_size {self.shard_size} (shards start at multiples of "
                f"{self.shard_size}; the last "
                f"ends at {len(self.ids)}); write each shard from shard_bounds() in one call."
            )
        return stop

    def _codes(self, variant: str, value: np.ndarray, n: int) -> np.ndarray:
        arr = np.asarray(value)
        if arr.shape != (n, *self.chw):
            raise StoreError(
                f"soft[{variant!r}] must have shape {(n, *self.chw)} (n, C, H, W), got {arr.shape}."
            )
        if arr.dtype == np.int8:
            if arr.max() > CODE_MAX:
                raise StoreError(
                    f"soft[{variant!r}] int8 codes must be <= 0 (log-prob codes); encode with "
                    "encode_logprobs."
                )
            return arr
        if np.issubdtype(arr.dtype, np.floating):
            return encode_logprobs(arr, axis=1)
        raise StoreError(
            f"soft[{variant!r}] must be float log-probs or int8 codes, got dtype {arr.dtype}."
        )

    def _all_codes(self, soft: Mapping[str, np.ndarray]) -> tuple[int, dict[str, np.ndarray]]:
        missing = [v for v in self.variants if v not in soft]
        unknown = [v for v in soft if v not in self.variants]
        if missing or unknown:
            raise StoreError(
                f"write_shard needs exactly the store's variants {', '.join(self.variants)}; "
                f"missing {missing}, unknown {unknown}."
            )
        n = int(np.shape(soft[self.variants[0]])[0]) if np.ndim(soft[self.variants[0]]) else 0
        return n, {v: self._codes(v, soft[v], n) for v in self.variants}

    def _stat_values(self, stats: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        unknown = [s for s in stats if s not in self.stat_names]
        if unknown:
            raise StoreError(
                f"unknown statistic(s) {unknown}; this store has: "
                f"{', '.join(self.stat_names) or 'none'}."
            )
        out = {s: np.asarray(v, dtype=np.float64) for s, v in stats.items()}
        for s, v in out.items():
            if v.shape != (n,):
                raise StoreError(f"stats[{s!r}] must have shape ({n},), got {v.shape}.")
        return out

    def write_shard(
        self,
        start: int,
        soft: dict[str, np.ndarray],
        stats: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Write one whole shard: every variant, then stats, then its ``done`` flags.

        Args:
            start: the shard's first image index (a multiple of ``shard_size``).
            soft: variant -> ``(n, C, H, W)`` float log-probs (encoded here) or int8 codes;
                ``n`` is the shard's length.
            stats: statistic name -> ``(n,)`` values (unwritten ones stay NaN).

        Raises:
            StoreError: on a block that is not one whole shard, a missing or unknown variant,
                or a wrong shape or dtype; nothing is written then.
        """
        n, codes = self._all_codes(soft)
        stop = self._shard_stop(int(start), n)
        values = self._stat_values(stats or {}, n)
        for v, code in codes.items():
            self._arrays[f"soft/{v}"][start:stop] = code
        for s, val in values.items():
            self._arrays[f"stats/{s}"][start:stop] = val
        self._arrays["done"][start:stop] = np.ones(n, dtype=bool)
        logger.debug("wrote shard [%d, %d) of %s", start, stop, self.tmp_path)

    def save_scratch(self, name: str, arrays: Mapping[str, np.ndarray]) -> None:
        """Keep ``arrays`` beside the unfinished store (atomically); :meth:`publish` drops them.

        For what a resumed run needs of the shards already done (e.g. their bank samples).
        """
        folder = self.tmp_path / SCRATCH
        folder.mkdir(exist_ok=True)
        name = c.check_name(name, "scratch name")
        tmp = folder / f".{name}.{os.getpid()}.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, folder / f"{name}.npz")

    def load_scratch(self, name: str) -> dict[str, np.ndarray] | None:
        """The arrays saved under ``name``, or None when there are none."""
        path = self.tmp_path / SCRATCH / f"{c.check_name(name, 'scratch name')}.npz"
        if not path.exists():
            return None
        with np.load(path) as data:
            return {k: data[k] for k in data.files}

    def publish(self) -> Path:
        """Mark the store complete and rename it to ``path``; refuse while images are missing.

        Returns:
            The published path.
        """
        done = np.asarray(self._arrays["done"][:], dtype=bool)
        if not done.all():
            missing = np.flatnonzero(~done)
            first = ", ".join(repr(self.ids[i]) for i in missing[:5])
            raise StoreError(
                f"cannot publish {self.tmp_path}: {missing.size} of {done.size} images are not "
                "written "
                f"(first: {first}); write the pending shards (or rerun `plc precompute --resume`)."
            )
        if self.path.exists() and not self.overwrite:
            raise StoreError(
                f"label store {self.path} already exists; pass overwrite=True (--force) to "
                "replace it."
            )
        c.remove(self.tmp_path / SCRATCH)
        self._group.attrs["status"] = "complete"
        self.attrs["status"] = "complete"
        c.consolidate(self.tmp_path)  # once, after the last write
        return c.publish_dir(self.tmp_path, self.path, overwrite=self.overwrite)
