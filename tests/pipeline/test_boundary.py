"""HD95 and ASSD: hand-computed cases, the empty-mask conventions, and a scipy oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from pipeline.boundary import boundary_distances


def _masks(*points: tuple[int, int], size: int = 16) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.long)
    for y, x in points:
        m[y, x] = 1
    return m


def test_single_pixels_give_their_euclidean_distance() -> None:
    pred = torch.stack([_masks((2, 2)), _masks((2, 2))])
    target = torch.stack([_masks((2, 5)), _masks((5, 6))])  # 3 px apart; a 3-4-5 triangle
    hd, asd = boundary_distances(pred, target, 2)
    assert hd.tolist() == pytest.approx([3.0, 5.0])
    assert asd.tolist() == pytest.approx([3.0, 5.0])


def test_empty_mask_conventions() -> None:
    empty, dot = _masks(), _masks((4, 4))
    pred = torch.stack([empty, empty, dot, dot])
    target = torch.stack([empty, dot, empty, dot])
    hd, asd = boundary_distances(pred, target, 2)
    for values in (hd, asd):
        assert values[0] == 0.0 and values[3] == 0.0
        assert math.isnan(values[1]) and math.isnan(values[2])


def _edges(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)  # 4-connected erosion, as MONAI


def _oracle(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Surface distances from edge pixels with scipy's exact EDT (MONAI's definition)."""
    ep, et = _edges(pred), _edges(target)
    d_pt = ndimage.distance_transform_edt(~et)[ep]  # pred edge -> nearest target edge
    d_tp = ndimage.distance_transform_edt(~ep)[et]
    hd95 = max(np.percentile(d_pt, 95), np.percentile(d_tp, 95))
    assd = np.concatenate([d_pt, d_tp]).mean()
    return float(hd95), float(assd)


def test_random_blobs_match_a_scipy_oracle() -> None:
    rng = np.random.default_rng(0)
    preds, targets = [], []
    for _ in range(6):
        t = ndimage.binary_dilation(rng.random((40, 40)) > 0.985, iterations=4)
        p = ndimage.binary_dilation(rng.random((40, 40)) > 0.985, iterations=3) | t
        p[: rng.integers(0, 20)] = False
        preds.append(p)
        targets.append(t)
    hd, asd = boundary_distances(
        torch.from_numpy(np.stack(preds)).long(), torch.from_numpy(np.stack(targets)).long(), 2
    )
    for i, (p, t) in enumerate(zip(preds, targets, strict=True)):
        if not p.any() or not t.any():
            assert math.isnan(hd[i])
            continue
        want_hd, want_asd = _oracle(p, t)
        assert hd[i].item() == pytest.approx(want_hd, rel=1e-6)
        assert asd[i].item() == pytest.approx(want_asd, rel=1e-6)


def test_multiclass_mean_skips_undefined_classes() -> None:
    pred = torch.zeros(1, 16, 16, dtype=torch.long)
    target = torch.zeros(1, 16, 16, dtype=torch.long)
    pred[0, 2, 2], target[0, 2, 6] = 1, 1  # class 1: 4 px apart
    target[0, 10, 10] = 2  # class 2: only in the target -> undefined, skipped
    hd, asd = boundary_distances(pred, target, 3)
    assert hd.item() == pytest.approx(4.0) and asd.item() == pytest.approx(4.0)
