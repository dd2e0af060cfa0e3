"""Functions run in spawned processes by the concurrency tests (importable by name)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
from label_helpers import IDS, VARS, create, soft_maps

from storage_schema import LabelStore, StoreError, encode_logprobs, open_label_store


def digest(store: LabelStore | str, seed: int) -> str:
    """SHA-256 of every variant's codes, read image by image in a seeded random order
    (and checked against one batch read of half the images)."""
    labels = store if isinstance(store, LabelStore) else open_label_store(store)
    order = np.random.default_rng(seed).permutation(len(labels))
    h = hashlib.sha256()
    for v in labels.variants:
        codes = np.empty((len(labels), *labels.read_codes(v, 0).shape), dtype=np.int8)
        for i in order:
            codes[i] = labels.read_codes(v, int(i))
        half = np.sort(order[: len(order) // 2])
        if labels.read_codes(v, half).tobytes() != codes[half].tobytes():
            raise AssertionError(f"a batch read of {v} differs from the same images read singly")
        h.update(codes.tobytes())
    return h.hexdigest()


def republish(path: str, generations: int) -> int:
    """Publish generation 1..n of the store at ``path`` (each with other labels) by rename."""
    for k in range(1, generations + 1):
        writer = create(Path(path), overwrite=True, provenance={"generation": k})
        maps = soft_maps(k)
        for a, b in writer.shard_bounds():
            writer.write_shard(a, {v: m[a:b] for v, m in maps.items()})
        writer.publish()
    return generations


def expected_codes(generations: int) -> dict[int, dict[str, np.ndarray]]:
    """Per generation, the codes a reader must see (generation 0 is the first store)."""
    return {
        k: {v: encode_logprobs(m, axis=1) for v, m in soft_maps(k).items()}
        for k in range(generations + 1)
    }


def read_while_republished(
    path: str, expected: dict, deadline: float, allowed: tuple[str, ...]
) -> dict[str, int]:
    """Open and read the store in a loop; count whole reads, refusals and mixes.

    A StoreError whose message has none of ``allowed`` is raised (the test fails).
    """
    out = {"complete": 0, "refused": 0, "mixed": 0}
    while time.monotonic() < deadline:
        try:
            labels = open_label_store(path)
            k = int(labels.provenance.get("generation", 0))
            same = labels.ids == IDS
            for v in VARS:
                for i in range(len(IDS)):
                    same &= bool(np.array_equal(labels.read_codes(v, i), expected[k][v][i]))
        except StoreError as err:
            if not any(a in str(err) for a in allowed):
                raise
            out["refused"] += 1
            continue
        out["complete" if same else "mixed"] += 1
    return out
