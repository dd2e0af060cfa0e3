"""Fixtures shared by the storage_schema tests: a tiny manifest, arrays and dataset store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from store_helpers import CLASSES, CREATED, SPLIT_OF, H, N, W, make_record

from storage_schema import build_manifest, write_dataset_store


@pytest.fixture
def records() -> list[dict]:
    return [make_record(i, s) for i, s in enumerate(SPLIT_OF)]


@pytest.fixture
def arrays() -> tuple[np.ndarray, np.ndarray]:
    """``images (N, H, W, 3)`` uint8 and ``masks (N, H, W)`` uint8 in {0, 1}."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(N, H, W, 3), dtype=np.uint8)
    masks = (rng.random((N, H, W)) < 0.3).astype(np.uint8)
    return images, masks


@pytest.fixture
def make_dataset(records, arrays) -> Callable[..., Path]:
    """Write the tiny dataset store at a path (keyword overrides go to write_dataset_store)."""

    def make(path: Path, **overrides) -> Path:
        images, masks = arrays
        kwargs = {
            "images": images,
            "masks": masks,
            "manifest": build_manifest(records),
            "name": "toy",
            "classes": CLASSES,
            "source": {"reader": "synthetic", "seed": 0},
            "created": CREATED,
        }
        kwargs.update(overrides)
        return write_dataset_store(path, **kwargs)

    return make
