"""Step-based, seeded batch sampling: an epoch is a fixed number of optimiser steps.

An epoch here is ``steps`` batches of ``batch_size`` image indices, whatever the dataset's
size (nnU-Net's "250 iterations per epoch"): a 22-image set and a 2,000-image set get the
same number of optimiser steps for the same ``epochs``. The dataset size ``n`` only enters
as the range of the indices.

Without weights, indices are drawn without replacement from concatenated random
permutations of ``range(n)`` (every image is seen once before any is seen twice); with
``weights``, each index is drawn independently with probability ``weights[i] / sum``
(foreground-aware sampling, see :func:`foreground_weights`). The draws depend only on
``(seed, epoch)``: the same pair gives the same batches in any process.

:func:`block_batches` is the order a store reads fastest: contiguous blocks of images in a
shuffled order, images shuffled within a window of a few blocks (MosaicML streaming's block
shuffling, FFCV's quasi-random order), so one window is a few contiguous reads.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = [
    "VAL_SEED",
    "block_batches",
    "foreground_weights",
    "foreground_weights_from_counts",
    "fraction_subset",
    "step_batches",
    "validation_indices",
]

logger = logging.getLogger(__name__)


def _rng(seed: int, epoch: int) -> np.random.Generator:
    """A generator whose stream depends only on ``(seed, epoch)``; any int epoch (FIG uses < 0)."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}.")
    return np.random.default_rng(np.random.SeedSequence([seed, int(epoch < 0), abs(epoch)]))


def step_batches(
    n: int,
    batch_size: int,
    steps: int,
    epoch: int,
    seed: int,
    weights: np.ndarray | None = None,
) -> list[np.ndarray]:
    """The index batches of one epoch: ``steps`` arrays of ``batch_size`` indices in [0, n).

    Args:
        n: dataset size, >= 1.
        batch_size: indices per batch, >= 1 (may exceed ``n``: indices then repeat).
        steps: batches in the epoch, >= 1.
        epoch: epoch number (any int; negative epochs are separate streams).
        seed: run seed, >= 0.
        weights: (n,) non-negative sampling weights with a positive sum, or None for
            uniform sampling without replacement within each pass over the data.

    Returns:
        ``steps`` int64 arrays of shape (batch_size,).
    """
    for name, value in (("n", n), ("batch_size", batch_size), ("steps", steps)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}.")
    rng = _rng(seed, epoch)
    need = steps * batch_size
    if weights is None:
        passes = -(-need // n)
        order = np.concatenate([rng.permutation(n) for _ in range(passes)])[:need]
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (n,):
            raise ValueError(f"weights must have shape ({n},), got {w.shape}.")
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError("weights must be finite, >= 0 and not all 0.")
        order = rng.choice(n, size=need, replace=True, p=w / w.sum())
    order = order.astype(np.int64)
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(steps)]


def block_batches(
    n: int,
    batch_size: int,
    steps: int,
    epoch: int,
    seed: int,
    block: int,
    window_blocks: int,
) -> list[np.ndarray]:
    """:func:`step_batches`' uniform draws in block-shuffled order.

    Each pass over the data cuts ``range(n)`` into contiguous blocks of ``block`` indices
    (the last one short), shuffles the blocks' order, and shuffles the indices within each
    window of ``window_blocks`` consecutive blocks of that order. Every index is still seen
    once per pass; a batch's indices come from one window (or two, where it straddles), so
    reading a window is ``window_blocks`` contiguous runs. Depends only on
    ``(seed, epoch)`` and the arguments.

    Args:
        n, batch_size, steps, epoch, seed: as :func:`step_batches`.
        block: indices per block, >= 1 (1 with ``window_blocks`` >= n: a full shuffle).
        window_blocks: blocks whose indices are shuffled together, >= 1.

    Returns:
        ``steps`` int64 arrays of shape (batch_size,).
    """
    for name, value in (("n", n), ("batch_size", batch_size), ("steps", steps),
                        ("block", block), ("window_blocks", window_blocks)):  # fmt: skip
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}.")
    rng = _rng(seed, epoch)
    need = steps * batch_size
    starts = np.arange(0, n, block)
    orders = []
    for _ in range(-(-need // n)):
        shuffled = rng.permutation(starts)
        for w in range(0, len(shuffled), window_blocks):  # a window: whole blocks
            held = [np.arange(a, min(a + block, n)) for a in shuffled[w : w + window_blocks]]
            orders.append(rng.permutation(np.concatenate(held)))
    order = np.concatenate(orders)[:need].astype(np.int64)
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(steps)]


def foreground_weights(masks: np.ndarray, fraction: float) -> np.ndarray | None:
    """:func:`foreground_weights_from_counts` of the foreground pixels of ``masks``.

    Args:
        masks: (N, H, W) integer class ids; class 0 is background.
        fraction: see :func:`foreground_weights_from_counts`.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}.")
    return foreground_weights_from_counts((masks > 0).reshape(len(masks), -1).sum(1), fraction)


def foreground_weights_from_counts(counts: np.ndarray, fraction: float) -> np.ndarray | None:
    """Per-image weights so that about ``fraction`` of draws have foreground, small lesions first.

    Images with foreground share ``fraction`` of the probability mass, each in proportion to
    ``1 / sqrt(foreground pixels)`` (an image with a small lesion is drawn more often than
    one with a large lesion); images without foreground share the rest equally.

    Args:
        counts: (N,) foreground pixels per image (>= 0).
        fraction: probability of drawing an image with foreground, in [0, 1]; 0 means
            uniform sampling (returns None).

    Returns:
        (N,) float64 weights summing to 1, or None for uniform sampling (``fraction`` 0, or
        no image has foreground). When every image has foreground, ``fraction`` no longer
        matters and only the small-lesion weighting remains.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}.")
    fg = np.asarray(counts, dtype=np.float64)
    if fg.ndim != 1 or np.any(fg < 0):
        raise ValueError(f"counts must be (N,) and >= 0, got shape {fg.shape}.")
    has = fg > 0
    if fraction == 0.0 or not has.any():
        return None
    w = np.zeros(len(fg), dtype=np.float64)
    inv = 1.0 / np.sqrt(fg[has])
    if has.all():
        w[has] = inv / inv.sum()
        return w
    w[has] = fraction * inv / inv.sum()
    w[~has] = (1.0 - fraction) / (~has).sum()
    return w


VAL_SEED = 0  # the validation subset is the same for every run seed and every stage


def validation_indices(n: int, fraction: float, seed: int = VAL_SEED) -> np.ndarray:
    """Sorted positions of a seeded ``fraction`` of ``n`` images held out for validation.

    At least one image and at least one training image remain on each side.

    Args:
        n: split size, >= 2.
        fraction: share held out, in (0, 1).
        seed: the subset's seed (``VAL_SEED`` unless a study wants another subset).

    Returns:
        (k,) int64 sorted indices, ``k = clip(round(n * fraction), 1, n - 1)``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val fraction must be in (0, 1), got {fraction}.")
    if n < 2:
        raise ValueError(f"a validation subset needs >= 2 training images, got {n}.")
    k = int(min(max(round(n * fraction), 1), n - 1))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2, 0]))
    return np.sort(rng.permutation(n)[:k]).astype(np.int64)


def fraction_subset(empty: np.ndarray, fraction: float, seed: int = VAL_SEED) -> np.ndarray:
    """Sorted positions of a seeded, stratified ``fraction`` of the images (``--train-fraction``).

    Stratified as the folds are (:func:`stages.prepare.folds.assign_folds`): images with foreground and
    empty images are subsampled separately, each keeping ``round(n_stratum * fraction)`` images
    (at least one of a non-empty stratum). Each stratum's order is one seeded permutation and
    the subset is its prefix, so the subsets are nested: the 25 % subset lies inside the 50 %
    one. The subset depends on the images' emptiness and ``seed`` only, never on a run's seed,
    so every variant and seed of a fold trains on the same images.

    Args:
        empty: (n,) bool, True where an image's mask has no foreground.
        fraction: share kept, in (0, 1]; 1 keeps every position.
        seed: the subset's seed.

    Returns:
        (k,) int64 sorted positions in ``[0, n)``.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"train fraction must be in (0, 1], got {fraction}.")
    flags = np.asarray(empty, dtype=bool)
    if fraction == 1.0:
        return np.arange(len(flags), dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3, 0]))
    kept = []
    for stratum in (False, True):
        members = np.flatnonzero(flags == stratum)
        if len(members) == 0:
            continue
        k = max(1, round(len(members) * fraction))
        kept.append(members[rng.permutation(len(members))[:k]])
    return np.sort(np.concatenate(kept)).astype(np.int64)
