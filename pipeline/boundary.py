"""Boundary metrics: per-image HD95 and ASSD (in pixels), with MONAI's implementations.

Per image and foreground class c (P = pred == c, G = target == c), through MONAI's
``compute_hausdorff_distance(percentile=95)`` (symmetric) and
``compute_average_surface_distance(symmetric=True)``:

- both P and G empty: 0.0 (a correct "nothing here", like Dice's ``empty="one"``);
- exactly one of them empty: NaN (no surface to measure; MONAI gives NaN or inf) — such
  classes drop out of the per-image mean over classes 1..K−1, and an image where every class
  is undefined is NaN; :func:`pipeline.metrics.mean_std` then skips it (the report counts them).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from pipeline.check import check_same_shape, check_shape


def boundary_distances(pred: Tensor, target: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-image HD95 and ASSD averaged over the foreground classes 1..K−1.

    Args:
        pred: (B, H, W) predicted class indices.
        target: (B, H, W) ground-truth class indices.
        num_classes: K, background included.

    Returns:
        hd95 (B,) and assd (B,), float64, in pixels (NaN where undefined, module docstring).
    """
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
    from monai.networks.utils import one_hot

    check_shape(pred, "B H W", "pred")
    check_same_shape(pred, target, ("pred", "target"))
    p = one_hot(pred.long().cpu().unsqueeze(1), num_classes)  # (B, K, H, W)
    g = one_hot(target.long().cpu().unsqueeze(1), num_classes)  # (B, K, H, W)
    with warnings.catch_warnings():  # MONAI warns on every empty mask; handled below
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(p, g, include_background=False, percentile=95)
        asd = compute_average_surface_distance(p, g, include_background=False, symmetric=True)
    p_any = p[:, 1:].flatten(2).any(2)  # (B, K-1)
    g_any = g[:, 1:].flatten(2).any(2)  # (B, K-1)
    both_empty, one_empty = ~p_any & ~g_any, p_any ^ g_any
    out = []
    for values in (hd.double(), asd.double()):  # (B, K-1)
        values = torch.where(both_empty, 0.0, values)
        values = torch.where(one_empty | ~torch.isfinite(values), torch.nan, values)
        out.append(values.nanmean(dim=1))
    return out[0], out[1]
