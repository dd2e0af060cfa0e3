"""Tiny dataset + label stores for the loader tests (random images, disc masks, soft labels)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from storage_schema import build_manifest, create_label_store, write_dataset_store

CREATED = "2024-01-01T00:00:00+00:00"


def _record(i: int, split: str) -> dict:
    sha = hashlib.sha256(f"img{i}".encode()).hexdigest()
    return {
        "id": f"img{i:03d}",
        "split": split,
        "image_path": f"images/img{i:03d}.png",
        "mask_path": f"masks/img{i:03d}.png",
        "orig_height": 32,
        "orig_width": 32,
        "image_sha256": sha,
        "mask_sha256": sha,
        "fg_fraction": 0.1,
        "empty_mask": False,
        "flags": "",
    }


def disc_masks(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) uint8 disc masks and the signed distance (> 0 inside, never 0 on a pixel)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cy, cx = rng.uniform(0.35 * size, 0.65 * size, (2, n, 1, 1))
    radius = rng.uniform(0.15 * size, 0.3 * size, (n, 1, 1)) + 0.013
    signed = radius - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)  # (N, H, W)
    return (signed > 0).astype(np.uint8), signed


def make_stores(
    root: Path,
    *,
    n_train: int = 10,
    n_test: int = 3,
    size: int = 32,
    seed: int = 0,
    chunk_images: int = 1,
) -> tuple[Path, Path]:
    """Write ``root/data.zarr`` and ``root/labels.zarr`` (train split; variants teacher, plc).

    ``plc`` is all-correct (argmax == mask everywhere); ``teacher`` is ``plc`` with noise,
    so it has false pixels. Test images come first in store order, so train store indices
    are not the label positions.
    """
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    split = ["test"] * n_test + ["train"] * n_train
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    masks, signed = disc_masks(n, size, rng)
    data = write_dataset_store(
        root / "data.zarr",
        images=images,
        masks=masks,
        manifest=build_manifest([_record(i, s) for i, s in enumerate(split)]),
        name="toy",
        classes=["background", "lesion"],
        source={"reader": "test"},
        created=CREATED,
        chunk_images=chunk_images,
    )
    from storage_schema import open_dataset_store

    store = open_dataset_store(data)
    train = store.indices("train")
    logit = signed[train] / 2.0  # (N, H, W) fg logit; argmax == mask
    plc = np.stack([np.zeros_like(logit), logit], axis=1)  # (N, 2, H, W)
    teacher = plc + rng.normal(scale=2.0, size=plc.shape)
    soft = {v: _log_softmax(x).astype(np.float32) for v, x in (("plc", plc), ("teacher", teacher))}
    writer = create_label_store(
        root / "labels.zarr",
        ids=[store.ids()[i] for i in train],
        variants=("teacher", "plc"),
        classes=["background", "lesion"],
        height=size,
        width=size,
        dataset_name="toy",
        manifest_sha256=store.manifest_sha256,
        shard_size=4,
        chunk_images=min(chunk_images, 4),
        provenance={"dataset_path": str(data)},
        created=CREATED,
    )
    for a, b in writer.shard_bounds():
        writer.write_shard(a, {v: x[a:b] for v, x in soft.items()})
    return data, writer.publish()


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))
