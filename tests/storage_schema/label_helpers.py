"""Label-store helpers shared by the label tests (also imported by spawned worker processes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from store_helpers import CLASSES, CREATED, log_softmax, sha

from storage_schema import LabelStoreWriter, create_label_store

N, C, H, W, SHARD = 7, 2, 5, 4, 3
IDS = [f"img{i}" for i in range(N)]
MANIFEST = sha("manifest")
VARS = ("teacher", "plc")


def soft_maps(seed: int = 0) -> dict[str, np.ndarray]:
    """Per variant ``(N, C, H, W)`` float32 log-probs."""
    rng = np.random.default_rng(seed)
    return {
        v: log_softmax(rng.normal(scale=3, size=(N, C, H, W)), axis=1).astype(np.float32)
        for v in VARS
    }


def create(path: Path, **overrides) -> LabelStoreWriter:
    kwargs = {
        "ids": IDS,
        "variants": VARS,
        "classes": CLASSES,
        "height": H,
        "width": W,
        "dataset_name": "toy",
        "manifest_sha256": MANIFEST,
        "stat_names": ("dice",),
        "shard_size": SHARD,
        "provenance": {"teacher": {"sha256": sha("t"), "config": {"depth": 2}}},
        "created": CREATED,
    }
    kwargs.update(overrides)
    return create_label_store(path, **kwargs)


def write_shard(writer: LabelStoreWriter, a: int, b: int, maps: dict[str, np.ndarray]) -> None:
    writer.write_shard(a, {v: m[a:b] for v, m in maps.items()}, {"dice": np.arange(a, b) / 10})


def write_all(path: Path, maps: dict[str, np.ndarray], order=None, **overrides) -> Path:
    writer = create(path, **overrides)
    bounds = writer.shard_bounds()
    for a, b in order(bounds) if order else bounds:
        write_shard(writer, a, b, maps)
    return writer.publish()


def shard_worker(tmp_path: str, bounds: list[tuple[int, int]], seed: int) -> int:
    """Runs in another process: re-open the writing store and write the given shards."""
    writer = LabelStoreWriter.open(tmp_path)
    maps = soft_maps(seed)
    for a, b in bounds:
        write_shard(writer, a, b, maps)
    return len(bounds)
