"""The stores' read path: what the crc32c checksums cost, and batch reads on shards.

Two copies of the same arrays in the stores' layout (one image per chunk, shards of 64
images, zstd level 3): one with the stores' codec chain (zstd + crc32c, and a crc32c on each
shard index, zarr's default), one with zstd alone. Reads as the student loader makes them:
random batches of 32 images (sorted) read either with zarr's orthogonal selection
(``oindex``) or as the store readers do (``read_runs``: one slice per run of consecutive
images), and whole shards in order; ``img/s`` counts images (uint8 RGB image + mask + one
int8 label map of C = 2).
The contents: random-texture RGB images (incompressible, a worst case for read speed) and
smooth soft labels (log-prob codes of blurred blobs, which compress as real labels do).

Usage::

    python benchmarks/bench_checksums.py                      # 256 images at 224²
    python benchmarks/bench_checksums.py --count 128 --size 128
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import zarr
import zarr.codecs
from _common import markdown_table, print_header, time_interleaved

from storage_schema import encode_logprobs
from storage_schema.integrity import codecs, has_checksum, read_runs

logger = logging.getLogger(__name__)

SHARD = 64


def make_arrays(n: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """images (N, S, S, 3) uint8, masks (N, S, S) uint8, codes (N, 2, S, S) int8."""
    import cv2

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    field = rng.normal(size=(n, size, size)).astype(np.float32)
    field = np.stack([cv2.GaussianBlur(f, (0, 0), size / 16) for f in field])  # (N, S, S)
    field /= field.std() + 1e-9
    logits = np.stack([np.zeros_like(field), 8 * field], axis=1)  # (N, 2, S, S)
    m = logits.max(axis=1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
    return {
        "images": images,
        "masks": (field > 0).astype(np.uint8),
        "codes": encode_logprobs(logp, axis=1),
    }


def write_store(path: Path, arrays: dict[str, np.ndarray], checksums: bool) -> zarr.Group:
    """The arrays sharded like the stores, with or without crc32c."""
    group = zarr.open_group(path, mode="w")
    for name, data in arrays.items():
        inner = [zarr.codecs.BytesCodec(), *(codecs() if checksums else codecs()[:1])]
        index = [zarr.codecs.BytesCodec(), *([zarr.codecs.Crc32cCodec()] if checksums else [])]
        sharding = zarr.codecs.ShardingCodec(
            chunk_shape=(1, *data.shape[1:]), codecs=inner, index_codecs=index
        )
        arr = group.create_array(
            name, shape=data.shape, dtype=data.dtype, chunks=(min(SHARD, len(data)), *data.shape[1:]),
            serializer=sharding, compressors=None, fill_value=0,
        )  # fmt: skip
        assert has_checksum(arr) == checksums
        arr[:] = data
    return zarr.open_group(path, mode="r")


def batch_reader(group: zarr.Group, n: int, batch: int, seed: int, runs: bool):
    rng = np.random.default_rng(seed)

    def read() -> None:
        idx = np.sort(rng.choice(n, size=batch, replace=False))
        for name in ("images", "masks", "codes"):
            arr = group[name]
            read_runs(arr, idx) if runs else np.asarray(arr.oindex[idx])

    return read


def shard_reader(group: zarr.Group, n: int):
    def read() -> None:
        for a in range(0, n, SHARD):
            for name in ("images", "masks", "codes"):
                np.asarray(group[name][a : a + SHARD])

    return read


def codec_table(arrays: dict[str, np.ndarray], repeats: int) -> str:
    """Per-chunk decode cost, CPU-bound and interleaved (robust to a loaded machine): zstd
    decompression vs the crc32c check of the same compressed chunk (``google_crc32c``, the
    function zarr's codec calls)."""
    import google_crc32c
    import numcodecs

    zstd = numcodecs.Zstd(level=3)
    rows = []
    for name, data in arrays.items():
        chunk = zstd.encode(np.ascontiguousarray(data[0]))  # one image's chunk
        t = time_interleaved(
            {
                "zstd": lambda c=chunk: [zstd.decode(c) for _ in range(20)],
                "crc": lambda c=chunk: [google_crc32c.value(c) for _ in range(20)],
            },
            repeats,
        )
        z, c = t["zstd"].median / 20, t["crc"].median / 20
        rows.append([
            name, f"{len(chunk):,}", f"{z * 1e6:,.1f}", f"{c * 1e6:,.1f}", f"{c / z:.3f}",
        ])  # fmt: skip
    return markdown_table(
        ["chunk", "compressed B", "zstd decode µs", "crc32c µs", "crc32c ÷ zstd"], rows
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=256, help="images")
    parser.add_argument("--size", type=int, default=224, help="image side")
    parser.add_argument("--batch", type=int, default=32, help="images per random batch")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    print_header(f"Store read path: {args.count} images at {args.size}², shards of {SHARD}")
    arrays = make_arrays(args.count, args.size)
    root = Path(tempfile.mkdtemp(prefix="bench-crc-"))
    try:
        groups = {c: write_store(root / f"{c}.zarr", arrays, c) for c in (False, True)}
        fns = {}
        for c, g in groups.items():
            fns[("oindex", c)] = batch_reader(g, args.count, args.batch, 0, runs=False)
            fns[("runs", c)] = batch_reader(g, args.count, args.batch, 0, runs=True)
            fns[("shards", c)] = shard_reader(g, args.count)
        times = time_interleaved(fns, args.repeats, args.warmup)
        labels = {
            "oindex": f"random batches of {args.batch}, zarr oindex",
            "runs": f"random batches of {args.batch}, read_runs (the readers)",
            "shards": "whole shards in order",
        }
        rows = []
        for key, label in labels.items():
            images = args.count if key == "shards" else args.batch
            plain, crc = times[(key, False)], times[(key, True)]
            rows.append([
                label, f"{images / plain.median:,.0f}", f"{images / crc.median:,.0f}",
                f"{crc.median / plain.median:.3f}", f"{max(plain.spread, crc.spread):.0%}",
            ])  # fmt: skip
        print(markdown_table(
            ["read", "zstd img/s", "zstd + crc32c img/s", "crc32c ÷ zstd time", "spread"], rows
        ))  # fmt: skip
        print()
        print(codec_table(arrays, args.repeats))
        bytes_ = {
            c: sum(f.stat().st_size for f in (root / f"{c}.zarr").rglob("*") if f.is_file())
            for c in (False, True)
        }
        print(f"\non disk: zstd {bytes_[False]:,} B, zstd + crc32c {bytes_[True]:,} B")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
