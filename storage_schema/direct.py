"""Contiguous runs of images read straight from a local store's shard files.

zarr-python 3.1 spends about 0.4 ms per chunk on its own machinery (an event-loop hop, a
shard-index read and decode per chunk, worker-thread hops) — more than zstd and crc32c take
for a 224² image (BENCHMARKS.md §10). The Rust codec pipeline ``zarrs`` (0.2.3) removes that
cost but, measured here, **does not check an inner chunk's crc32c on a partial shard read**:
a flipped bit in a chunk comes back as wrong labels without an error (it checks only when a
whole shard is read). So the student loader reads through this module instead: for the store
layout ``storage_schema`` writes (a sharded array of 1-byte values, inner chunks of whole
images along the image axis, inner codecs bytes → zstd (optional) → crc32c, the shard index
at the end with its own crc32c) it

- keeps each shard file's index in a bounded LRU cache (re-read when the file changes),
- reads the byte range of a run of consecutive chunks with one ``pread``,
- checks every chunk's crc32c (and the index's) and decompresses it with zstd,

and returns exactly the bytes zarr returns. The files stay standard Zarr v3: nothing is
written here. Anything else (a URL, another codec chain, a missing chunk) is left to zarr.
"""

from __future__ import annotations

import collections
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

EMPTY = 2**64 - 1  # offset and length of a chunk that is not in its shard
CRC_MISMATCH = "crc32c checksum mismatch (corrupt chunk or shard index)"  # as integrity.reason
INDEX_CACHE = 256  # shard indexes held per array (16 bytes per chunk each)


class ChunkError(Exception):
    """Chunks that failed their check: ``bad`` maps image positions to the reason."""

    def __init__(self, bad: dict[int, str]) -> None:
        super().__init__(next(iter(bad.values())))
        self.bad = bad


class Fallback(Exception):
    """This run cannot be read directly (a missing shard or chunk): let zarr read it."""


@dataclass(frozen=True)
class _Layout:
    shard: int  # images per shard file
    chunk: int  # images per inner chunk
    image_shape: tuple[int, ...]
    dtype: np.dtype
    zstd: bool
    fill: int


def _layout(arr: zarr.Array) -> _Layout | None:
    """The layout this reader handles, read from the array's metadata; None for any other."""
    codecs = getattr(arr.metadata, "codecs", None)
    if not codecs or len(codecs) != 1 or type(codecs[0]).__name__ != "ShardingCodec":
        return None
    sharding = codecs[0]
    names = [type(c).__name__ for c in sharding.codecs]
    index = [type(c).__name__ for c in sharding.index_codecs]
    if names not in (["BytesCodec", "ZstdCodec", "Crc32cCodec"], ["BytesCodec", "Crc32cCodec"]):
        return None
    if index != ["BytesCodec", "Crc32cCodec"] or sharding.index_location.value != "end":
        return None
    shape, shards, chunks = tuple(arr.shape), tuple(arr.shards), tuple(arr.chunks)
    if np.dtype(arr.dtype).itemsize != 1 or shards[1:] != shape[1:] or chunks[1:] != shape[1:]:
        return None  # whole images per chunk, 1-byte values (no byte order to mind)
    if shards[0] % chunks[0]:
        return None
    return _Layout(shards[0], chunks[0], shape[1:], np.dtype(arr.dtype),
                   "ZstdCodec" in names, int(arr.metadata.fill_value))  # fmt: skip


class DirectArray:
    """One local sharded array read by runs of images (see the module docstring).

    Use :meth:`of`; :meth:`read` returns ``arr[start:stop]``'s bytes or raises
    :class:`ChunkError` naming the images of every chunk that failed its check.
    Thread-safe; safe to use after ``fork`` (files are opened per read).
    """

    def __init__(self, arr: zarr.Array, folder: Path, layout: _Layout) -> None:
        self.folder = folder
        self.layout = layout
        self.n = int(arr.shape[0])
        self._key = arr.metadata.encode_chunk_key
        self._indexes: collections.OrderedDict[int, tuple[tuple, np.ndarray]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()
        self._image_bytes = int(np.prod(layout.image_shape))

    @classmethod
    def of(cls, arr: zarr.Array, folder: Path | None) -> DirectArray | None:
        """A reader of ``arr`` stored at local ``folder``; None where zarr must read."""
        if folder is None or not Path(folder).is_dir():
            return None
        layout = _layout(arr)
        return None if layout is None else cls(arr, Path(folder), layout)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Images ``[start, stop)`` as an array of shape ``(stop - start, *image_shape)``.

        Raises:
            ChunkError: a chunk or shard index failed its crc32c or does not decompress.
            Fallback: a shard file or chunk is missing (zarr reads fill values there).
        """
        if not 0 <= start <= stop <= self.n:
            raise IndexError(f"images [{start}, {stop}) out of range for {self.n}")
        lay = self.layout
        out = np.empty((stop - start, *lay.image_shape), dtype=lay.dtype)
        if stop == start:
            return out
        bad: dict[int, str] = {}
        for shard in range(start // lay.shard, (stop - 1) // lay.shard + 1):
            a = max(start, shard * lay.shard)
            b = min(stop, (shard + 1) * lay.shard)
            self._read_shard(shard, a, b, out[a - start : b - start], start, bad)
        if bad:
            raise ChunkError(bad)
        return out

    def _read_shard(
        self, shard: int, a: int, b: int, out: np.ndarray, start: int, bad: dict[int, str]
    ) -> None:
        lay = self.layout
        path = self.folder / self._key((shard, *(0,) * len(lay.image_shape)))
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise Fallback(str(path)) from None
        try:
            index = self._index(shard, fd, path)
            if index is None:  # every image of the shard is unreadable
                bad.update(dict.fromkeys(range(a, b), CRC_MISMATCH))
                return
            c0 = (a - shard * lay.shard) // lay.chunk
            c1 = (b - 1 - shard * lay.shard) // lay.chunk + 1
            offsets, lengths = index[c0:c1, 0], index[c0:c1, 1]
            if np.any(offsets == EMPTY):
                raise Fallback(f"{path}: a chunk is not stored")
            lo = int(offsets.min())
            hi = int((offsets + lengths).max())
            blob = os.pread(fd, hi - lo, lo)
        finally:
            os.close(fd)
        view = np.frombuffer(blob, dtype=np.uint8)  # chunks are sliced as views, not copies
        for i, c in enumerate(range(c0, c1)):
            first = shard * lay.shard + c * lay.chunk  # the chunk's first image
            raw = view[int(offsets[i]) - lo : int(offsets[i] + lengths[i]) - lo]
            lo_img, hi_img = max(first, a), min(first + lay.chunk, b)
            whole = lo_img == first and hi_img == first + lay.chunk
            # a chunk wholly inside the run decodes straight into the result
            dest = out[first - a : first - a + lay.chunk] if whole else None
            images, why = self._decode(raw, dest)
            if images is None:
                bad.update(dict.fromkeys(range(lo_img, hi_img), why))
            elif not whole:
                out[lo_img - a : hi_img - a] = images[lo_img - first : hi_img - first]

    def _decode(self, raw: np.ndarray, dest: np.ndarray | None) -> tuple[np.ndarray | None, str]:
        """One inner chunk's images (written into ``dest`` when given), or (None, why) when
        it fails its crc32c or zstd."""
        import google_crc32c
        import numcodecs.zstd

        lay = self.layout
        size = lay.chunk * self._image_bytes
        if len(raw) < 4 or google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
            return None, CRC_MISMATCH
        payload = raw[:-4]
        if not lay.zstd:
            if len(payload) != size:
                return None, f"a chunk of {len(payload)} bytes, expected {size}"
            images = payload.view(lay.dtype).reshape(lay.chunk, *lay.image_shape)
            if dest is not None:
                dest[...] = images
            return images, ""
        if frame_content_size(payload) != size:  # decompressing into a buffer would not say
            try:
                data = numcodecs.zstd.decompress(payload)
            except Exception as err:
                return None, f"{type(err).__name__}: {err}"[:200]
            if len(data) != size:
                return None, f"a chunk of {len(data)} bytes, expected {size}"
            images = np.frombuffer(data, dtype=lay.dtype).reshape(lay.chunk, *lay.image_shape)
            if dest is not None:
                dest[...] = images
            return images, ""
        target = np.empty((lay.chunk, *lay.image_shape), lay.dtype) if dest is None else dest
        try:
            numcodecs.zstd.decompress(payload, target)
        except Exception as err:
            return None, f"{type(err).__name__}: {err}"[:200]
        return target, ""

    def _index(self, shard: int, fd: int, path: Path) -> np.ndarray | None:
        """The shard's (chunks, 2) uint64 index, cached per file version; None if corrupt."""
        import google_crc32c

        stat = os.fstat(fd)
        version = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        with self._lock:
            held = self._indexes.get(shard)
            if held is not None and held[0] == version:
                self._indexes.move_to_end(shard)
                return held[1]
        n_chunks = self.layout.shard // self.layout.chunk
        size = 16 * n_chunks + 4
        if stat.st_size < size:
            return None
        tail = os.pread(fd, size, stat.st_size - size)
        if google_crc32c.value(tail[:-4]) != int.from_bytes(tail[-4:], "little"):
            return None
        index = np.frombuffer(tail[:-4], dtype="<u8").reshape(n_chunks, 2)
        if np.any((index[:, 0] != EMPTY) & (index[:, 0] + index[:, 1] > stat.st_size)):
            return None
        with self._lock:
            self._indexes[shard] = (version, index)
            while len(self._indexes) > INDEX_CACHE:
                self._indexes.popitem(last=False)
        return index


def frame_content_size(frame: np.ndarray) -> int | None:
    """The decompressed size a zstd frame header declares (RFC 8878 §3.1.1.1), or None when
    the header does not say (or this is not a zstd frame)."""
    if len(frame) < 6 or bytes(frame[:4]) != b"\x28\xb5\x2f\xfd":
        return None
    descriptor = int(frame[4])
    fcs_flag, single = descriptor >> 6, (descriptor >> 5) & 1
    dict_bytes = (0, 1, 2, 4)[descriptor & 3]
    at = 5 + (0 if single else 1) + dict_bytes  # after the window descriptor and dictionary id
    width = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if width == 0 or len(frame) < at + width:
        return None
    value = int.from_bytes(bytes(frame[at : at + width]), "little")
    return value + 256 if width == 2 else value
