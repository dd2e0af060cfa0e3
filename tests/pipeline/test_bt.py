"""Tests for pipeline.bt: regions, swaps that preserve values, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.bt import (
    BTConfig,
    band_sizes,
    boundary_regions,
    boundary_transform,
    scaled_delta,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def erode_oracle(mask: np.ndarray, delta: int) -> np.ndarray:
    """Loop erosion: inside iff every in-image pixel within Chebyshev distance delta is inside."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    for i in range(h):
        for j in range(w):
            win = mask[max(0, i - delta) : i + delta + 1, max(0, j - delta) : j + delta + 1]
            out[i, j] = win.all()
    return out


def test_band_sizes_hand_case() -> None:
    masks = torch.zeros(3, 9, 9, dtype=torch.long)
    masks[0, 2:7, 2:7] = 1  # a 5 x 5 square: at delta 1, interior 3 x 3 = 9, band 25 - 9 = 16
    masks[1, 0:2, 0:2] = 1  # 2 x 2 in the corner: the border does not erode, interior 1 (0, 0)
    masks[1, 5:7, 5:7] = 2  # 2 x 2 inside: no interior at delta 1
    # image 2 holds no lesion: it does not count
    one, two = band_sizes(masks, delta=1, num_classes=3)
    assert one == {"class": 1, "images": 2, "band": (16 + 3) / 2, "interior": (9 + 1) / 2,
                   "no_interior": 0}  # fmt: skip
    assert two == {"class": 2, "images": 1, "band": 4.0, "interior": 0.0, "no_interior": 1}


def test_regions_hand_case() -> None:
    mask = torch.zeros(9, 9, dtype=torch.bool)
    mask[1:8, 1:8] = True  # 7x7 square
    band, interior = boundary_regions(mask, 2)
    expected = torch.zeros(9, 9, dtype=torch.bool)
    expected[3:6, 3:6] = True  # 2 px eroded from each side
    assert torch.equal(interior, expected)
    assert torch.equal(band, mask & ~expected) and int(band.sum()) == 49 - 9


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), delta=st.integers(1, 3))
def test_regions_match_loop_erosion(seed: int, delta: int) -> None:
    mask = torch.rand(12, 11, generator=gen(seed)) < 0.8
    band, interior = boundary_regions(mask, delta)
    assert np.array_equal(interior.numpy(), erode_oracle(mask.numpy(), delta))
    assert not (band & interior).any() and torch.equal(band | interior, mask)


def test_regions_match_cv2_erode() -> None:
    cv2 = pytest.importorskip("cv2")
    mask = torch.rand(30, 30, generator=gen(4)) < 0.9
    _, interior = boundary_regions(mask, 2)
    ref = cv2.erode(mask.numpy().astype(np.uint8), np.ones((5, 5), np.uint8))
    assert np.array_equal(interior.numpy(), ref.astype(bool))


def blob_case(
    seed: int, num_classes: int, b: int, size: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images and masks made of random rectangles of each foreground class."""
    g = gen(seed)
    images = torch.rand(b, 3, size, size, generator=g)
    masks = torch.zeros(b, size, size, dtype=torch.long)
    for i in range(b):
        for c in range(1, num_classes):
            y, x = torch.randint(0, size - 4, (2,), generator=g).tolist()
            hh, ww = torch.randint(2, size, (2,), generator=g).tolist()
            masks[i, y : y + hh, x : x + ww] = c
    return images, masks


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    num_classes=st.integers(2, 4),
    b=st.integers(1, 3),
    delta=st.integers(1, 3),
    rho=st.sampled_from([1.0, 0.5, 0.3]),
)
def test_swaps_preserve_values_and_stay_in_regions(
    seed: int, num_classes: int, b: int, delta: int, rho: float
) -> None:
    images, masks = blob_case(seed, num_classes, b)
    images_before, masks_before = images.clone(), masks.clone()
    cfg = BTConfig(delta=delta, rho=rho)
    out = boundary_transform(images, masks, cfg, gen(seed), num_classes=num_classes)
    assert torch.equal(images, images_before) and torch.equal(masks, masks_before)
    for i in range(b):
        changed = (out[i] != images[i]).any(dim=0)  # (H, W)
        n_total = 0
        for c in range(1, num_classes):
            band, interior = boundary_regions(masks[i] == c, delta)
            n = math.floor(rho * min(int(band.sum()), int(interior.sum())))
            n_total += n
            region = band | interior
            # whole RGB triples move only within the class's own region
            before = rows_sorted(images[i].flatten(1).T[region.flatten()])
            after = rows_sorted(out[i].flatten(1).T[region.flatten()])
            assert torch.equal(before, after)
            assert int((changed & band).sum()) == n and int((changed & interior).sum()) == n
        assert int(changed.sum()) <= 2 * n_total
        assert not (changed & (masks[i] == 0)).any()
        for ch in range(3):
            assert torch.equal(
                out[i, ch].flatten().sort().values, images[i, ch].flatten().sort().values
            )


def rows_sorted(x: torch.Tensor) -> torch.Tensor:
    """(n, 3) rows in lexicographic order."""
    order = np.lexsort(x.numpy().T[::-1])
    return x[torch.from_numpy(order.copy())]


def test_thin_line_and_empty_mask_unchanged() -> None:
    image = torch.rand(3, 20, 20, generator=gen(1))
    line = torch.zeros(20, 20, dtype=torch.long)
    line[10:12, 2:18] = 1  # 2-px vessel: empty interior for delta >= 1
    cfg = BTConfig(delta=1)
    assert torch.equal(boundary_transform(image, line, cfg, gen()), image)
    empty = torch.zeros(20, 20, dtype=torch.long)
    assert torch.equal(boundary_transform(image, empty, cfg, gen()), image)


def test_single_image_and_batch_agree_and_seeded() -> None:
    images, masks = blob_case(3, 2, 1, size=24)
    cfg = BTConfig(delta=2)
    a = boundary_transform(images[0], masks[0], cfg, gen(5))
    assert a.shape == (3, 24, 24)
    assert torch.equal(a, boundary_transform(images, masks, cfg, gen(5))[0])
    assert torch.equal(a, boundary_transform(images[0], masks[0], cfg, gen(5)))
    if (a != images[0]).any():
        assert not torch.equal(a, boundary_transform(images[0], masks[0], cfg, gen(6)))


def test_full_swap_count_hand_case() -> None:
    image = torch.arange(3 * 81, dtype=torch.float32).view(3, 9, 9)
    mask = torch.zeros(9, 9, dtype=torch.long)
    mask[1:8, 1:8] = 1  # band 40 pixels, interior 9 (delta 2)
    out = boundary_transform(image, mask, BTConfig(delta=2, rho=1.0), gen())
    changed = (out != image).any(dim=0)
    assert int(changed.sum()) == 18 and changed[3:6, 3:6].all()


def test_uint8_images_supported() -> None:
    images, masks = blob_case(8, 3, 2)
    u8 = (images * 255).to(torch.uint8)
    out = boundary_transform(u8, masks, BTConfig(delta=1), gen(), num_classes=3)
    assert out.dtype == torch.uint8 and out.shape == u8.shape


def test_validation_messages() -> None:
    with pytest.raises(ValueError, match=r"BTConfig\.delta must be an integer >= 1"):
        BTConfig(delta=0)
    with pytest.raises(ValueError, match=r"BTConfig.rho must lie in \[0, 1\]"):
        BTConfig(rho=1.5)
    with pytest.raises(ValueError, match=r"mask values must lie in \[0, 2\)"):
        boundary_transform(torch.rand(3, 4, 4), torch.full((4, 4), 2), BTConfig(), gen())
    with pytest.raises(ValueError, match="image must have shape"):
        boundary_transform(
            torch.rand(3, 4, 5), torch.zeros(4, 4, dtype=torch.long), BTConfig(), gen()
        )
    with pytest.raises(ValueError, match="mask must be a bool"):
        boundary_regions(torch.zeros(4, 4, dtype=torch.long), 1)


def test_scaled_delta() -> None:
    assert scaled_delta(5, 224) == 5
    assert scaled_delta(5, 448) == 10
    assert scaled_delta(5, 384) == 9  # 8.57 rounds to 9
    assert scaled_delta(5, 16) == 1  # never below one pixel
