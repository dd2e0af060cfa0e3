"""Why the loader does not use the ``zarrs`` codec pipeline: what it returns for a corrupt chunk.

    pip install zarrs   # not a dependency of plc-kd
    python benchmarks/zarrs_checksums.py

Writes one array in the stores' layout (sharded, inner chunks zstd + crc32c, the shard index
with its own crc32c), flips one bit inside the first inner chunk, and reads it back with
zarr-python's pipeline, with ``zarrs.ZarrsCodecPipeline`` (``validate_checksums`` on) and with
``storage_schema.direct``, reading part of the shard and all of it. Also times a 32-image read
through each. Prints a table; asserts nothing.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]


def main() -> None:
    import zarr

    from storage_schema.direct import ChunkError
    from storage_schema.integrity import codecs

    try:
        import zarrs  # noqa: F401
    except ImportError:
        print("zarrs is not installed (pip install zarrs): nothing to compare.")
        return
    zarrs_cfg = {"codec_pipeline.path": "zarrs.ZarrsCodecPipeline",
                 "codec_pipeline.validate_checksums": True}  # fmt: skip
    rng = np.random.default_rng(0)
    data = rng.integers(-128, 127, (128, 2, 224, 224), dtype=np.int8) // 16  # compressible
    rows = [
        "| reader | read | sound store | one flipped bit in chunk 0 |",
        "| --- | --- | --- | --- |",
    ]
    timing = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a"
        arr = zarr.create_array(str(path), shape=data.shape, dtype="int8", chunks=(1, 2, 224, 224),
                                shards=(64, 2, 224, 224), compressors=codecs(), fill_value=0)  # fmt: skip
        arr[:] = data
        sound = Path(tmp) / "sound"
        import shutil

        shutil.copytree(path, sound)
        shard = path / "c" / "0" / "0" / "0" / "0"
        body = bytearray(shard.read_bytes())
        body[100] ^= 0x10
        shard.write_bytes(bytes(body))
        for reader in ("zarr-python", "zarrs", "storage_schema.direct"):
            for label, (a, b) in (("images 0-7 (part of a shard)", (0, 8)),
                                  ("images 0-63 (a whole shard)", (0, 64))):  # fmt: skip
                cells = []
                for where in (sound, path):
                    try:
                        got = read(reader, where, a, b, zarrs_cfg)
                        same = np.array_equal(got, data[a:b])
                        cells.append("correct bytes" if same else "**wrong bytes, no error**")
                    except (ChunkError, ValueError, RuntimeError) as err:
                        cells.append(f"error: {type(err).__name__}: {str(err)[:60]}")
                rows.append(f"| {reader} | {label} | {cells[0]} | {cells[1]} |")
            start = time.perf_counter()
            for _ in range(5):
                read(reader, sound, 32, 64, zarrs_cfg)
            timing.append(f"| {reader} | {1e3 * (time.perf_counter() - start) / 5 / 32:.3f} |")
    print("\n".join(rows))
    print("\n| reader | ms per image, 32 contiguous 224² code maps |\n| --- | ---: |")
    print("\n".join(timing))


def read(reader: str, where: Path, a: int, b: int, zarrs_cfg: dict) -> np.ndarray:
    import zarr

    from storage_schema.direct import DirectArray

    if reader == "storage_schema.direct":
        return DirectArray.of(zarr.open_array(str(where), mode="r"), where).read(a, b)
    with zarr.config.set(zarrs_cfg if reader == "zarrs" else {}):
        return zarr.open_array(str(where), mode="r")[a:b]


if __name__ == "__main__":
    main()
