"""Helpers shared by the storage_schema tests (a uniquely named module, importable from tests)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

N, H, W = 5, 6, 7
CLASSES = ["background", "lesion"]
SPLIT_OF = ["train", "train", "val", "test", "train"]
CREATED = "2024-01-01T00:00:00+00:00"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_record(i: int, split: str = "train") -> dict:
    """One valid manifest record for image ``i``."""
    return {
        "id": f"img{i:03d}",
        "split": split,
        "image_path": f"images/img{i:03d}.png",
        "mask_path": f"masks/img{i:03d}.png",
        "orig_height": 480 + i,
        "orig_width": 640,
        "image_sha256": sha(f"image{i}"),
        "mask_sha256": sha(f"mask{i}"),
        "fg_fraction": 0.125 * (i % 3),
        "empty_mask": i % 3 == 0,
        "flags": "" if i % 2 else "resized",
    }


def log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }
