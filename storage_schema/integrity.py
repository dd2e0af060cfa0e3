"""Checked reads: every chunk carries a crc32c checksum, and a read that fails names the image.

zarr verifies each chunk's crc32c (and, in sharded arrays, the shard index's) as it decodes.
A failed read is narrowed down here to the images whose chunks fail, and reported in one
sentence naming the store, the array and the image ids. Used by the readers (distill,
evaluate, inspect, any DataLoader worker) and by ``plc verify``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import zarr
import zarr.codecs
from zarr.core.sync import sync

from storage_schema.direct import ChunkError, DirectArray, Fallback
from storage_schema.errors import RemoteReadError, StoreError
from storage_schema.location import Pin

Index = int | np.integer | slice | np.ndarray | list
_MAX_NAMED = 50  # ids named in one message before "(+n more)"


def codecs(compress: bool = True) -> list[Any]:
    """The bytes-to-bytes codec chain of every store array: zstd (optional), then crc32c."""
    chain: list[Any] = [zarr.codecs.ZstdCodec(level=3)] if compress else []
    return [*chain, zarr.codecs.Crc32cCodec()]


def has_checksum(arr: zarr.Array) -> bool:
    """True when every chunk of ``arr`` (and its shard index, if sharded) carries a crc32c."""

    def crc(chain: Sequence[Any]) -> bool:
        return any(isinstance(x, zarr.codecs.Crc32cCodec) for x in chain)

    chain = list(arr.metadata.codecs)
    shard = next((x for x in chain if isinstance(x, zarr.codecs.ShardingCodec)), None)
    if shard is None:
        return crc(chain)
    return crc(shard.codecs) and crc(shard.index_codecs)


def positions(index: Index, n: int) -> tuple[Any, np.ndarray]:
    """(zarr selection, int64 image positions) for an int, a slice, or a 1-D int/bool array.

    Raises:
        IndexError: for a position out of range or an index of another kind.
    """
    if isinstance(index, int | np.integer):
        i = int(index) + n if index < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(f"image index {int(index)} out of range for {n} images")
        return i, np.array([i], dtype=np.int64)
    if isinstance(index, slice):
        return index, np.arange(*index.indices(n), dtype=np.int64)
    idx = np.asarray(index)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise IndexError(f"a boolean index must have shape ({n},), got {idx.shape}")
        idx = np.flatnonzero(idx)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise IndexError(
            f"index must be an int, a slice or a 1-D int array, got {idx.dtype} {idx.shape}"
        )
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"index out of range for {n} images")
    idx = np.where(idx < 0, idx + n, idx)
    return idx, idx


def reason(err: BaseException) -> str:
    """A short cause for a failed chunk read."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if "checksum" in text.lower():
        return "crc32c checksum mismatch (corrupt chunk or shard index)"
    return f"{type(err).__name__}: {text}"[:200]


def name_ids(ids: Sequence[str], bad: Sequence[int]) -> str:
    """``'a', 'b', ... (+n more)`` for the images at positions ``bad``."""
    names = [repr(ids[i]) if 0 <= i < len(ids) else f"#{i}" for i in bad[:_MAX_NAMED]]
    more = f" (+{len(bad) - _MAX_NAMED} more)" if len(bad) > _MAX_NAMED else ""
    return ", ".join(names) + more


def _read(arr: zarr.Array, sel: Any) -> np.ndarray:
    if isinstance(sel, np.ndarray):
        if not sel.size:
            return np.empty((0, *arr.shape[1:]), arr.dtype)
        return read_runs(arr, sel) if arr.shards is not None else np.asarray(arr.oindex[sel])
    return np.asarray(arr[sel])


def read_runs(arr: zarr.Array, index: np.ndarray) -> np.ndarray:
    """``arr.oindex[index]`` along the first axis, read as one slice per run of consecutive
    positions.

    zarr 3.1's orthogonal selection on a sharded array is ~10x slower than slices of the
    same chunks (measured at 224², 32 random images of 128: 17 vs 184 img/s for RGB images,
    44 vs 211 for label codes; `benchmarks/bench_checksums.py`). The slices are read
    concurrently on zarr's event loop (one ``sync`` call per batch, not one per run: about
    1.35x the img/s of sequential slices for random batches of 16 at 224², BENCHMARKS.md §7;
    over HTTP the range requests overlap).
    """
    out = np.empty((len(index), *arr.shape[1:]), dtype=arr.dtype)
    order = np.argsort(index, kind="stable")
    ordered = index[order]
    breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
    runs = np.split(np.arange(len(ordered)), breaks)
    bounds = [(int(ordered[r[0]]), int(ordered[r[-1]]) + 1) for r in runs]

    async def gather() -> list[Any]:
        return await asyncio.gather(*(arr.async_array.getitem(slice(a, b)) for a, b in bounds))

    for run, part in zip(runs, sync(gather()), strict=True):
        out[order[run]] = np.asarray(part)
    return out


def failing(arr: zarr.Array, pos: np.ndarray) -> dict[int, str]:
    """Read the images at ``pos`` one by one: position -> reason for each that fails."""
    bad: dict[int, str] = {}
    for i in pos.tolist():
        try:
            np.asarray(arr[i])
        except (IndexError, TypeError, RemoteReadError):
            raise
        except Exception as err:
            bad[i] = reason(err)
    return bad


def corrupt_error(what: str, key: str, ids: Sequence[str], bad: dict[int, str]) -> StoreError:
    """One sentence naming the store, the array, the images and the reason."""
    first = next(iter(bad.values()))
    return StoreError(
        f"{what}: array '{key}' cannot be read at image(s) {name_ids(ids, sorted(bad))}: {first}; "
        "restore the store (e.g. `dvc checkout` or a fresh copy) or rebuild it, and check it "
        "with `plc verify`."
    )


def read_checked(
    arr: zarr.Array,
    key: str,
    index: Index,
    *,
    what: str,
    ids: Sequence[str],
    pin: Pin | None = None,
    direct: DirectArray | None = None,
) -> np.ndarray:
    """``arr[index]`` along the image axis; a chunk that fails its check raises StoreError.

    Args:
        arr: an array whose first axis is the image axis.
        key: the array's name in the store (for the message).
        index: an int (one image), a slice, or a 1-D int or bool array.
        what: the store, e.g. ``"label store labels/x.zarr"``.
        ids: image ids in store order (for the message).
        pin: the copy of the store that was opened; checked after the read (and before
            blaming a chunk: a store replaced mid-read is reported as replaced, not corrupt).
        direct: the array's :class:`~storage_schema.direct.DirectArray`; an int or a
            contiguous slice is then read from the shard files directly (same bytes, same
            errors), anything else through zarr.

    Raises:
        StoreError: naming ``what``, ``key`` and the failing image ids; or saying the store
            was republished since it was opened.
        IndexError: for an out-of-range or malformed index.
    """
    sel, pos = positions(index, int(arr.shape[0]))
    if direct is not None and isinstance(sel, int | slice) and len(pos) and _contiguous(pos):
        try:
            return _read_direct(direct, sel, pos, key, what=what, ids=ids, pin=pin)
        except Fallback:
            pass  # a missing shard or chunk: zarr reads its fill value
    try:
        out = _read(arr, sel)
    except (IndexError, TypeError, RemoteReadError):
        raise  # a server that stayed down is not a corrupt store: its own sentence
    except Exception:
        if pin is not None:
            pin.check()
        bad = failing(arr, pos)
        if not bad:  # every image read on a second try: a fault in transit, read it again
            try:
                out = _read(arr, sel)
            except (IndexError, TypeError, RemoteReadError):
                raise
            except Exception as again:
                err, bad = again, failing(arr, pos)
            else:
                if pin is not None:
                    pin.check()
                return out
        bad = bad or {int(p): reason(err) for p in pos}
        if pin is not None:
            pin.check()
        raise corrupt_error(what, key, ids, bad) from None
    if pin is not None:
        pin.check()
    return out


def _contiguous(pos: np.ndarray) -> bool:
    return int(pos[-1]) - int(pos[0]) + 1 == len(pos) and bool(np.all(np.diff(pos) == 1))


def _read_direct(
    direct: DirectArray,
    sel: int | slice,
    pos: np.ndarray,
    key: str,
    *,
    what: str,
    ids: Sequence[str],
    pin: Pin | None,
) -> np.ndarray:
    """:func:`read_checked` through the direct reader: a failed chunk is read once more (a
    fault in transit), then named; the pin is checked before blaming a chunk and after."""
    start, stop = int(pos[0]), int(pos[-1]) + 1
    try:
        out = direct.read(start, stop)
    except ChunkError:
        if pin is not None:
            pin.check()
        try:
            out = direct.read(start, stop)
        except ChunkError as err:
            if pin is not None:
                pin.check()
            raise corrupt_error(what, key, ids, err.bad) from None
    if pin is not None:
        pin.check()
    return out[0] if isinstance(sel, int) else out


def scan(arr: zarr.Array, bad: dict[int, str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Read all of ``arr`` shard by shard: ``(positions, data)`` of the images that read.

    Images whose chunks fail are left out of ``data`` and recorded in ``bad`` with a reason.
    """
    n = int(arr.shape[0])
    step = int((arr.shards or arr.chunks)[0])
    for a in range(0, n, step):
        pos = np.arange(a, min(a + step, n), dtype=np.int64)
        try:
            data = np.asarray(arr[a : pos[-1] + 1])
        except Exception as err:
            found = failing(arr, pos) or {int(p): reason(err) for p in pos}
            bad.update(found)
            pos = np.array([p for p in pos.tolist() if p not in found], dtype=np.int64)
            data = _read(arr, pos)
        yield pos, data


def _first_axis(selection: Any) -> Any:
    """The image-axis part of a zarr selection (``...`` and a missing part mean all)."""
    if isinstance(selection, tuple):
        selection = selection[0] if selection else slice(None)
    return slice(None) if selection is Ellipsis else selection


class CheckedArray:
    """A ``zarr.Array`` whose every read refuses a corrupt chunk naming the image.

    Reads (``a[...]``, ``a.oindex[...]``, ``a.get_orthogonal_selection(...)``,
    ``np.asarray(a)``) behave as zarr's, except that a chunk failing its crc32c raises a
    StoreError naming the store, the array and the image ids, and a read after the store was
    republished is refused. Every other attribute (``shape``, ``chunks``, ``metadata``...)
    is the wrapped array's.
    """

    def __init__(
        self, arr: zarr.Array, key: str, what: str, ids: Sequence[str], pin: Pin | None = None
    ) -> None:
        self.array = arr
        self.key = key
        self.what = what
        self.ids = ids
        self.pin = pin

    def __getattr__(self, name: str) -> Any:
        return getattr(self.array, name)

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def _guard(self, read: Any, selection: Any) -> np.ndarray:
        try:
            out = read()
        except (IndexError, TypeError):
            raise
        except Exception as err:
            if self.pin is not None:
                self.pin.check()
            try:
                _, pos = positions(_first_axis(selection), int(self.array.shape[0]))
            except (IndexError, TypeError):
                pos = np.arange(int(self.array.shape[0]), dtype=np.int64)
            bad = failing(self.array, pos) or {int(p): reason(err) for p in pos}
            raise corrupt_error(self.what, self.key, self.ids, bad) from None
        if self.pin is not None:
            self.pin.check()
        return out

    def __getitem__(self, selection: Any) -> np.ndarray:
        return self._guard(lambda: self.array[selection], selection)

    def get_orthogonal_selection(self, selection: Any, **kwargs: Any) -> np.ndarray:
        """zarr's orthogonal selection, checked (image-axis-only selections read by runs)."""
        return self._guard(lambda: self._orthogonal(selection, **kwargs), selection)

    def _orthogonal(self, selection: Any, **kwargs: Any) -> np.ndarray:
        first = _first_axis(selection)
        only_first = not isinstance(selection, tuple) or all(
            isinstance(s, slice) and s == slice(None) for s in selection[1:]
        )
        if only_first and not kwargs and isinstance(first, np.ndarray | list):
            idx = np.asarray(first)
            if idx.ndim == 1 and idx.dtype != bool and idx.size:
                _, pos = positions(idx, int(self.array.shape[0]))
                return _read(self.array, pos)
        return self.array.get_orthogonal_selection(selection, **kwargs)

    @property
    def oindex(self) -> _CheckedOIndex:
        """``a.oindex[...]``, checked."""
        return _CheckedOIndex(self)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype)


class _CheckedOIndex:
    def __init__(self, owner: CheckedArray) -> None:
        self.owner = owner

    def __getitem__(self, selection: Any) -> np.ndarray:
        return self.owner._guard(lambda: self.owner._orthogonal(selection), selection)
