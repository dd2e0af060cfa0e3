"""Cross-validation folds: one fold per image, stratified by empty / non-empty masks.

``plc prepare --folds K`` writes the fold of every image into the manifest (its optional
``fold`` column); every stage's ``--fold F`` then trains on the other folds and tests on fold F
(:meth:`storage_schema.DatasetStore.with_fold`). The team never sees its test fold, so each
fold has its own team and label store, at paths that name the fold (``stages.paths``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def assign_folds(empty: Sequence[bool], k: int, seed: int) -> list[int]:
    """A fold in ``0..k-1`` for every image, stratified by empty masks.

    Within each stratum (images with foreground first, then empty ones) a seeded permutation
    is dealt round-robin; the deal continues across strata, so every fold's size differs from
    every other's by at most one, and so does its count of each stratum.

    Args:
        empty: per image in store order, True when its mask has no foreground.
        k: number of folds, 2 <= k <= len(empty).
        seed: the same images and seed give the same folds.

    Returns:
        One fold per image, in order.

    Raises:
        ValueError: ``k`` out of range.
    """
    n = len(empty)
    if not 2 <= k <= n:
        raise ValueError(f"--folds must be between 2 and the number of images ({n}), got {k}.")
    rng = np.random.default_rng(seed)
    flags = np.asarray(empty, dtype=bool)
    folds = np.empty(n, dtype=np.int64)
    dealt = 0
    for stratum in (False, True):
        members = np.flatnonzero(flags == stratum)
        order = members[rng.permutation(len(members))]
        folds[order] = (dealt + np.arange(len(order))) % k
        dealt += len(order)
    return folds.tolist()


def fold_tag(fold: int | None) -> str:
    """``"fold<F>"`` for a fold, ``""`` without one (the stored split)."""
    return "" if fold is None else f"fold{fold}"
