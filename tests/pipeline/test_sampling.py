"""Step-based batch sampling: fixed steps per epoch, seeded streams, foreground weights."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pipeline.sampling import (
    foreground_weights,
    foreground_weights_from_counts,
    step_batches,
    validation_indices,
)


def test_steps_and_batch_size_do_not_depend_on_dataset_size() -> None:
    for n in (3, 22, 500):
        batches = step_batches(n, 8, 25, epoch=0, seed=0)
        assert len(batches) == 25
        assert all(b.shape == (8,) and b.dtype == np.int64 for b in batches)
        flat = np.concatenate(batches)
        assert flat.min() >= 0 and flat.max() < n


def test_every_image_seen_once_before_any_twice() -> None:
    n, bs, steps = 10, 4, 5  # 20 draws = 2 full passes
    flat = np.concatenate(step_batches(n, bs, steps, epoch=3, seed=7))
    assert sorted(flat[:10]) == list(range(10))
    assert sorted(flat[10:]) == list(range(10))


def test_same_seed_and_epoch_repeat_and_differ_otherwise() -> None:
    a = step_batches(50, 4, 10, epoch=2, seed=1)
    b = step_batches(50, 4, 10, epoch=2, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    other_epoch = np.concatenate(step_batches(50, 4, 10, epoch=3, seed=1))
    other_seed = np.concatenate(step_batches(50, 4, 10, epoch=2, seed=2))
    negative = np.concatenate(step_batches(50, 4, 10, epoch=-2, seed=1))
    for other in (other_epoch, other_seed, negative):
        assert not np.array_equal(np.concatenate(a), other)


def test_same_batches_in_a_fresh_process() -> None:
    code = (
        "import numpy as np; from pipeline.sampling import step_batches;"
        "print(np.concatenate(step_batches(30, 3, 4, 1, 5)).tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    here = np.concatenate(step_batches(30, 3, 4, 1, 5)).tolist()
    assert out.stdout.strip() == str(here)


def test_weights_set_the_draw_frequencies() -> None:
    w = np.array([0.0, 1.0, 3.0, 0.0])
    flat = np.concatenate(step_batches(4, 100, 40, epoch=0, seed=0, weights=w))
    counts = np.bincount(flat, minlength=4) / flat.size
    assert counts[0] == 0 and counts[3] == 0
    assert counts[2] == pytest.approx(0.75, abs=0.02)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be >= 1"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"weights": np.ones(3)}, "weights must have shape (5,)"),
        ({"weights": np.zeros(5)}, "not all 0"),
        ({"seed": -1}, "seed must be >= 0"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, message: str) -> None:
    args = {"n": 5, "batch_size": 2, "steps": 3, "epoch": 0, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        step_batches(**args)


def test_foreground_weights_favour_small_lesions() -> None:
    masks = np.zeros((4, 4, 4), dtype=np.int64)
    masks[0, :1, :1] = 1  # 1 foreground pixel
    masks[1, :2, :2] = 1  # 4 foreground pixels
    w = foreground_weights(masks, fraction=0.5)
    # foreground images share 0.5 in proportion 1/sqrt(1) : 1/sqrt(4) = 2 : 1
    assert w == pytest.approx([1 / 3, 1 / 6, 0.25, 0.25])
    assert foreground_weights(masks, 0.0) is None
    assert foreground_weights(np.zeros((2, 3, 3), dtype=np.int64), 0.5) is None
    with pytest.raises(ValueError, match="fraction must be in"):
        foreground_weights(masks, 1.5)


def test_weights_from_counts_match_weights_from_masks() -> None:
    counts = np.array([1, 4, 0, 0])
    assert foreground_weights_from_counts(counts, 0.5) == pytest.approx([1 / 3, 1 / 6, 0.25, 0.25])
    every = foreground_weights_from_counts(np.array([1, 4]), 0.3)  # all have foreground
    assert every == pytest.approx([2 / 3, 1 / 3])
    with pytest.raises(ValueError, match="counts must be"):
        foreground_weights_from_counts(np.array([-1, 2]), 0.5)


def test_validation_indices_are_seeded_sorted_and_leave_training_images() -> None:
    val = validation_indices(20, 0.25)
    assert val.tolist() == sorted(val.tolist()) and len(val) == 5
    assert np.array_equal(val, validation_indices(20, 0.25))  # same subset every call
    assert not np.array_equal(val, validation_indices(20, 0.25, seed=1))
    assert len(validation_indices(3, 0.01)) == 1 and len(validation_indices(3, 0.99)) == 2
    with pytest.raises(ValueError, match="val fraction must be in"):
        validation_indices(10, 0.0)
    with pytest.raises(ValueError, match="needs >= 2 training images"):
        validation_indices(1, 0.5)


def test_fraction_subset_is_stratified_nested_and_seeded() -> None:
    from pipeline.sampling import fraction_subset

    empty = np.array([False] * 30 + [True] * 10)
    half, quarter = fraction_subset(empty, 0.5), fraction_subset(empty, 0.25)
    assert (empty[half] == False).sum() == 15 and empty[half].sum() == 5  # noqa: E712
    assert (empty[quarter] == False).sum() == 8 and empty[quarter].sum() == 2  # round(7.5) = 8  # noqa: E712
    assert np.isin(quarter, half).all()  # nested
    assert np.array_equal(half, np.sort(half)) and len(set(half.tolist())) == len(half)
    assert np.array_equal(half, fraction_subset(empty, 0.5))  # the same every call
    assert not np.array_equal(half, fraction_subset(empty, 0.5, seed=1))
    assert np.array_equal(fraction_subset(empty, 1.0), np.arange(40))
    assert len(fraction_subset(np.array([True, False]), 0.1)) == 2  # each stratum keeps one
    with pytest.raises(ValueError, match="train fraction must be in"):
        fraction_subset(empty, 0.0)


# --------------------------------------------------------------------------- block shuffle


@pytest.mark.parametrize(("n", "block", "window"), [(50, 4, 3), (16, 16, 1), (23, 5, 2)])
def test_block_batches_visit_every_index_once_per_pass_window_by_window(
    n: int, block: int, window: int
) -> None:
    from pipeline.sampling import block_batches

    batches = block_batches(n, 2, steps=n, epoch=3, seed=7, block=block, window_blocks=window)
    order = np.concatenate(batches)
    assert all(b.shape == (2,) and b.dtype == np.int64 for b in batches)
    for p in range(2):  # two whole passes: each a permutation of range(n)
        one = order[p * n : (p + 1) * n]
        assert sorted(one.tolist()) == list(range(n))
        # the pass is cut into windows of whole blocks (``window`` of them; the last window
        # may hold fewer): each window's first e positions are exactly its blocks' indices
        a = 0
        while a < n:
            for e in range(a + 1, n + 1):
                held = set(one[a:e].tolist())
                blocks = {i // block for i in held}
                whole = held == {
                    i for b in blocks for i in range(b * block, min(b * block + block, n))
                }
                if whole and (len(blocks) == window or e == n):
                    break
            assert whole and len(blocks) <= window
            a = e
    again = block_batches(n, 2, n, 3, 7, block, window)
    assert all(np.array_equal(x, y) for x, y in zip(batches, again, strict=True))  # seeded
    other = block_batches(n, 2, n, 4, 7, block, window)
    assert not all(np.array_equal(x, y) for x, y in zip(batches, other, strict=True))


def test_block_batches_with_blocks_of_one_in_one_window_are_a_full_shuffle() -> None:
    from pipeline.sampling import block_batches

    order = np.concatenate(block_batches(40, 8, 5, 0, 1, block=1, window_blocks=40))
    assert sorted(order.tolist()) == list(range(40))
    assert not np.array_equal(order, np.arange(40))
    with pytest.raises(ValueError, match="block must be >= 1"):
        block_batches(40, 8, 5, 0, 1, block=0, window_blocks=2)
