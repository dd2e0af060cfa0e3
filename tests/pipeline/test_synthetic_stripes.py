"""The stripes cue of the synthetic generator: a lesion and same-colour look-alikes told apart
only by the orientation of their stripes; ``stripes=0`` draws what it always drew."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.synthetic import MIN_AREA, _stripe_cue, generate_dataset, stripe_angle


def _sector(angle: float, orientations: int) -> float:
    """An orientation's position in sectors (2K per half turn), in [0, 2K)."""
    return (angle % np.pi) / (np.pi / (2 * orientations))


def _orientation(image: np.ndarray, region: np.ndarray) -> float:
    """Dominant gradient orientation in [0, π) over ``region``, from the structure tensor."""
    gx = cv2.Sobel(image, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(image, cv2.CV_64F, 0, 1, ksize=3)
    inner = cv2.erode(region, np.ones((5, 5), np.uint8)) > 0  # off the blended edge
    jxx, jyy, jxy = (gx * gx)[inner].sum(), (gy * gy)[inner].sum(), (gx * gy)[inner].sum()
    return float(0.5 * np.arctan2(2 * jxy, jxx - jyy)) % np.pi


def test_zero_stripes_draws_what_the_generator_always_drew() -> None:
    plain = generate_dataset(8, 64, seed=3)
    zero = generate_dataset(8, 64, seed=3, stripes=0)
    np.testing.assert_array_equal(plain[0], zero[0])
    np.testing.assert_array_equal(plain[1], zero[1])


@pytest.mark.parametrize("orientations", [2, 4, 8])
def test_lesions_take_even_sectors_and_lookalikes_the_odd_ones(orientations: int) -> None:
    rng = np.random.default_rng(orientations)
    for _ in range(300):
        a = _sector(stripe_angle(rng, orientations, lesion=True), orientations)
        b = _sector(stripe_angle(rng, orientations, lesion=False), orientations)
        assert int(a) % 2 == 0 and int(b) % 2 == 1
        # the middle half of the sector: half a sector at least between the two kinds
        assert 0.25 <= a % 1 <= 0.75 and 0.25 <= b % 1 <= 0.75


@pytest.mark.parametrize("seed", range(6))
def test_painted_stripes_run_at_the_drawn_orientations(seed: int) -> None:
    """On a flat image, the structure tensor finds each blob's stripes in its kind's sectors."""
    orientations, size = 2, 128
    image = np.zeros((3, size, size), np.float32)
    delta = np.zeros((3, 1, 1), np.float32)  # stripes only
    mask, lookalikes = _stripe_cue(
        np.random.default_rng(seed), image, delta, 1.0, orientations, False
    )
    grey = image.mean(0).astype(np.float64)
    assert mask.any() and lookalikes.any()
    assert int(_sector(_orientation(grey, mask), orientations)) % 2 == 0
    n, labels = cv2.connectedComponents(lookalikes)
    for k in range(1, n):
        blob = (labels == k).astype(np.uint8)
        assert int(_sector(_orientation(grey, blob), orientations)) % 2 == 1


def test_the_mask_is_the_lesion_and_the_lookalikes_lie_apart_from_it() -> None:
    rng = np.random.default_rng(0)
    with_lookalikes = 0
    for _ in range(40):
        image = np.zeros((3, 64, 64), np.float32)
        delta = np.full((3, 1, 1), 20.0, np.float32)
        mask, lookalikes = _stripe_cue(rng, image, delta, 64 / 224, 4, False)
        assert mask.mean() >= MIN_AREA  # one lesion, always
        if lookalikes.any():
            with_lookalikes += 1
            near = cv2.dilate(mask, np.ones((9, 9), np.uint8))
            assert not (near & lookalikes).any()  # 4 px apart at least
            _, _, stats, _ = cv2.connectedComponentsWithStats(lookalikes)
            assert stats[1:, cv2.CC_STAT_AREA].min() >= MIN_AREA * 64 * 64  # lesion-sized
    assert with_lookalikes >= 30


def test_generated_masks_are_binary_and_empty_samples_hold_only_lookalikes() -> None:
    images, masks = generate_dataset(12, 64, seed=2, empty_fraction=0.25, stripes=4)
    assert images.dtype == np.uint8 and set(np.unique(masks)) == {0, 1}
    empty = ~masks.reshape(12, -1).any(1)
    assert empty.sum() == 3
    again = generate_dataset(12, 64, seed=2, empty_fraction=0.25, stripes=4)
    np.testing.assert_array_equal(images, again[0])  # seeded like the rest
    rng = np.random.default_rng(5)
    for _ in range(10):  # an empty sample: no lesion, but its look-alikes are painted
        image = np.zeros((3, 64, 64), np.float32)
        mask, lookalikes = _stripe_cue(
            rng, image, np.zeros((3, 1, 1), np.float32), 64 / 224, 4, True
        )
        assert not mask.any() and lookalikes.any()
        assert (
            np.abs(image[:, lookalikes > 0]).mean() > 5 * np.abs(image[:, lookalikes == 0]).mean()
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stripes": 1}, r"stripes must be 0 or in 2\.\.8"),
        ({"stripes": 9}, r"stripes must be 0 or in 2\.\.8"),
        ({"stripes": 2.0}, "stripes must be an integer"),
        ({"stripes": 3, "num_classes": 3}, "stripes needs num_classes = 2"),
    ],
)
def test_bad_stripes_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_dataset(2, 32, seed=0, **kwargs)
