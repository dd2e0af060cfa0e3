"""The synthetic lesion generator: seeded, varied, and hard (low contrast, blurred edges)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.synthetic import MAX_AREA, MIN_AREA, generate_dataset, generate_sample


@pytest.fixture(scope="module")
def lesions() -> tuple[np.ndarray, np.ndarray]:
    """60 lesion images at 128² (none empty)."""
    return generate_dataset(60, 128, seed=11, empty_fraction=0.0)


def test_same_seed_same_arrays_other_seed_other_arrays() -> None:
    a_img, a_mask = generate_dataset(6, 64, seed=5)
    b_img, b_mask = generate_dataset(6, 64, seed=5)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    c_img, _ = generate_dataset(6, 64, seed=6)
    assert not np.array_equal(a_img, c_img)
    one, _ = generate_sample(np.random.default_rng(1), 64)
    two, _ = generate_sample(np.random.default_rng(1), 64)
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("size", [32, 64, 96])
def test_shapes_dtypes_and_binary_masks(size: int) -> None:
    images, masks = generate_dataset(5, size, seed=0)
    assert images.shape == (5, size, size, 3) and images.dtype == np.uint8
    assert masks.shape == (5, size, size) and masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1}


@pytest.mark.parametrize(("n", "fraction", "expected"), [(40, 0.05, 2), (10, 0.0, 0), (7, 1.0, 7)])
def test_exact_number_of_empty_images(n: int, fraction: float, expected: int) -> None:
    images, masks = generate_dataset(n, 48, seed=2, empty_fraction=fraction)
    empty = ~masks.reshape(n, -1).any(axis=1)  # (N, H, W) -> (N, H*W) -> (N,)
    assert int(empty.sum()) == expected
    assert all(images[i].std() > 3 for i in range(n))  # empty images still have texture


def test_empty_sample_has_an_empty_mask_and_distractors() -> None:
    image, mask = generate_sample(np.random.default_rng(0), 96, empty=True)
    assert not mask.any()
    assert image.reshape(-1, 3).std(axis=0).max() > 5  # background is not flat


def test_lesion_area_spans_one_to_forty_percent(lesions: tuple[np.ndarray, np.ndarray]) -> None:
    _, masks = lesions
    area = masks.reshape(len(masks), -1).mean(axis=1)  # (N, H, W) -> (N, H*W) -> (N,)
    assert area.min() >= MIN_AREA and area.max() <= MAX_AREA
    assert area.min() < 0.03 and area.max() > 0.2  # small and large lesions both occur
    assert len({m.tobytes() for m in masks}) == len(masks)  # every shape differs


def _along_lesion_colour(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Project ``(H, W, 3)`` pixels on the lesion-minus-background mean colour: ``(H, W)``."""
    pixels = image.astype(np.float64)
    direction = pixels[mask > 0].mean(0) - pixels[mask == 0].mean(0)
    return pixels @ (direction / np.linalg.norm(direction))


def test_boundary_is_blurred(lesions: tuple[np.ndarray, np.ndarray]) -> None:
    """Right at the GT boundary the colour step is a small part of the full contrast."""
    ratios = []
    kernel = np.ones((3, 3), np.uint8)
    for image, mask in zip(*lesions, strict=True):
        deep_in = cv2.erode(mask, np.ones((9, 9), np.uint8))
        far_out = 1 - cv2.dilate(mask, np.ones((15, 15), np.uint8))
        if deep_in.sum() < 10:
            continue
        p = _along_lesion_colour(image, mask)
        inner_ring, outer_ring = mask - cv2.erode(mask, kernel), cv2.dilate(mask, kernel) - mask
        edge_step = p[inner_ring > 0].mean() - p[outer_ring > 0].mean()
        ratios.append(edge_step / (p[deep_in > 0].mean() - p[far_out > 0].mean()))
    # a sharp edge would give a ratio near 1; the generator's soft band gives ~0.1
    assert len(ratios) > 30 and np.median(ratios) < 0.35


def test_contrast_is_low_and_colour_alone_cannot_segment(
    lesions: tuple[np.ndarray, np.ndarray],
) -> None:
    """Even the best global threshold on the oracle colour direction gives a poor Dice."""
    best_dice, separation = [], []
    for image, mask in zip(*lesions, strict=True):
        p = _along_lesion_colour(image, mask)
        inside, outside = p[mask > 0], p[mask == 0]
        separation.append((inside.mean() - outside.mean()) / np.sqrt(inside.var() + outside.var()))
        dice = [
            2 * np.sum((p > t) & (mask > 0)) / (np.sum(p > t) + mask.sum())
            for t in np.quantile(p, np.linspace(0.02, 0.98, 49))
        ]
        best_dice.append(max(dice))
    assert np.median(best_dice) < 0.8
    assert 0.3 < np.median(separation) < 2.5  # visible, but far from trivially separable


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0, "size": 32, "seed": 0}, "n must be at least 1"),
        ({"n": 2, "size": 8, "seed": 0}, "size must be at least 16"),
        (
            {"n": 2, "size": 32, "seed": 0, "empty_fraction": 1.5},
            r"empty_fraction must be in \[0, 1\]",
        ),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_dataset(**kwargs)
