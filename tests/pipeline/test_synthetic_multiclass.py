"""The multi-class synthetic generator: two (or more) lesion types that differ in colour."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.synthetic import MAX_AREA, MIN_AREA, generate_dataset


@pytest.fixture(scope="module")
def three() -> tuple[np.ndarray, np.ndarray]:
    """80 images at 96² with background + two lesion types, none empty."""
    return generate_dataset(80, 96, seed=4, empty_fraction=0.0, num_classes=3)


def test_values_are_class_ids_and_both_types_occur(three: tuple[np.ndarray, np.ndarray]) -> None:
    _, masks = three
    assert masks.dtype == np.uint8 and set(np.unique(masks)) == {0, 1, 2}
    present = [set(np.unique(m).tolist()) - {0} for m in masks]
    assert all(present)  # no image is empty at empty_fraction 0
    assert sum(p == {1} for p in present) > 5 and sum(p == {2} for p in present) > 5
    assert sum(p == {1, 2} for p in present) > 5  # and both types share images
    lesion = (masks > 0).reshape(len(masks), -1).mean(axis=1)  # (N, H, W) -> (N,)
    assert lesion.min() >= MIN_AREA / 2 and lesion.max() <= MAX_AREA


def test_types_never_touch(three: tuple[np.ndarray, np.ndarray]) -> None:
    _, masks = three
    for m in masks:
        grown = cv2.dilate((m == 1).astype(np.uint8), np.ones((3, 3), np.uint8))
        assert not (grown.astype(bool) & (m == 2)).any()


def _offset(image: np.ndarray, region: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean RGB of ``region`` minus the mean of the background ring around it."""
    ring = cv2.dilate(region.astype(np.uint8), np.ones((11, 11), np.uint8)).astype(bool)
    ring &= mask == 0
    return image[region].mean(0) - image[ring].mean(0)


def test_types_are_told_apart_by_colour(three: tuple[np.ndarray, np.ndarray]) -> None:
    images, masks = three
    offsets = {1: [], 2: []}
    for image, mask in zip(images.astype(np.float64), masks, strict=True):
        for c in (1, 2):
            if (mask == c).sum() > 20:
                offsets[c].append(_offset(image, mask == c, mask))
    a, b = np.array(offsets[1]), np.array(offsets[2])
    centre_a, centre_b = a.mean(0), b.mean(0)
    # nearest centroid of the colour offset recognises the type in most lesions
    right_a = np.linalg.norm(a - centre_a, axis=1) < np.linalg.norm(a - centre_b, axis=1)
    right_b = np.linalg.norm(b - centre_b, axis=1) < np.linalg.norm(b - centre_a, axis=1)
    accuracy = (right_a.sum() + right_b.sum()) / (len(a) + len(b))
    assert accuracy > 0.9, accuracy
    assert centre_b[2] - centre_a[2] > 10  # type 2 is the bluer one, as documented


def test_seeded_and_two_classes_unchanged_by_the_option() -> None:
    a = generate_dataset(5, 48, seed=9, num_classes=3)
    b = generate_dataset(5, 48, seed=9, num_classes=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    binary = generate_dataset(5, 48, seed=9)
    explicit = generate_dataset(5, 48, seed=9, num_classes=2)
    assert all(np.array_equal(x, y) for x, y in zip(binary, explicit, strict=True))
    assert set(np.unique(binary[1])) <= {0, 1}


def test_empty_samples_and_bad_class_counts() -> None:
    _, masks = generate_dataset(10, 48, seed=1, empty_fraction=0.3, num_classes=4)
    assert int((~masks.reshape(10, -1).any(axis=1)).sum()) == 3
    assert masks.max() <= 3
    for bad in (1, 7, True, 2.5):
        with pytest.raises(ValueError, match="num_classes must be"):
            generate_dataset(2, 48, seed=0, num_classes=bad)  # type: ignore[arg-type]
