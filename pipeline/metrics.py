"""Evaluation metrics: per-image Dice and IoU over foreground classes, mean ± std.

Empty-ground-truth convention (per image and foreground class c, P = pred == c,
G = target == c):

- ``empty="one"`` (default): Dice = 2|P∩G| / (|P| + |G|), IoU = |P∩G| / |P∪G|, and 1.0 when
  both P and G are empty (a correct "nothing here"); G empty but P not gives 0.0. This is
  MONAI's ``ignore_empty=False``.
- ``empty="nan"``: NaN whenever G is empty, whatever P is (MONAI's ``ignore_empty=True``,
  its default); such classes drop out of the per-image mean, and an image with no
  foreground at all gets NaN, which `mean_std` then ignores. (MONAI's per-image
  ``reduction="mean_channel"`` writes 0 for such an image but leaves it out of its batch
  ``"mean"``; skipping the NaN gives the same dataset mean.)

The per-image value is the mean over classes 1..K−1 (NaNs ignored), like MONAI's
``DiceMetric(include_background=False, reduction="mean_channel")``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from pipeline.check import check_same_shape, check_shape

logger = logging.getLogger(__name__)

EmptyRule = Literal["one", "nan"]


def _check_masks(pred: Tensor, target: Tensor, num_classes: int, empty: str) -> None:
    check_shape(pred, "B H W", "pred")
    check_same_shape(pred, target, ("pred", "target"))
    if empty not in ("one", "nan"):
        raise ValueError(f"empty must be 'one' or 'nan', got {empty!r}.")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}.")
    for name, mask in (("pred", pred), ("target", target)):
        if mask.dtype.is_floating_point:
            raise ValueError(f"{name} must hold integer class indices, got dtype {mask.dtype}.")
        if mask.numel() and (int(mask.min()) < 0 or int(mask.max()) >= num_classes):
            raise ValueError(
                f"{name} values must lie in [0, {num_classes - 1}], "
                f"got values in [{int(mask.min())}, {int(mask.max())}]."
            )


def _counts(pred: Tensor, target: Tensor, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per image and foreground class: |P∩G|, |P|, |G|, each (B, K−1) float64."""
    classes = torch.arange(1, num_classes, device=pred.device).view(1, -1, 1)  # (1, K-1, 1)
    p = pred.reshape(pred.shape[0], 1, -1) == classes  # (B, K-1, H·W)
    g = target.reshape(target.shape[0], 1, -1) == classes  # (B, K-1, H·W)
    inter = (p & g).sum(dim=2, dtype=torch.float64)
    return inter, p.sum(dim=2, dtype=torch.float64), g.sum(dim=2, dtype=torch.float64)


def dice_iou(
    pred: Tensor, target: Tensor, num_classes: int, empty: EmptyRule = "one"
) -> tuple[Tensor, Tensor]:
    """Per-image Dice and IoU averaged over the foreground classes 1..K−1.

    Args:
        pred: (B, H, W) predicted class indices.
        target: (B, H, W) ground-truth class indices.
        num_classes: K, background included.
        empty: rule for an empty ground truth, "one" or "nan" (module docstring).

    Returns:
        dice (B,) and iou (B,), float64.
    """
    dice, iou = dice_iou_per_class(pred, target, num_classes, empty)
    return dice.nanmean(dim=1), iou.nanmean(dim=1)


def dice_iou_per_class(
    pred: Tensor, target: Tensor, num_classes: int, empty: EmptyRule = "one"
) -> tuple[Tensor, Tensor]:
    """Per-image Dice and IoU of each foreground class 1..K−1 (same rules as :func:`dice_iou`).

    With ``empty="one"`` no value is NaN, so the mean over images of column c is class c's
    Dice and the mean of those per-class means equals the mean of :func:`dice_iou`.

    Returns:
        dice (B, K−1) and iou (B, K−1), float64; column c − 1 is class c.
    """
    _check_masks(pred, target, num_classes, empty)
    inter, n_pred, n_true = _counts(pred, target, num_classes)
    union = n_pred + n_true - inter
    both_empty = n_pred + n_true == 0
    dice = torch.where(both_empty, 1.0, 2 * inter / (n_pred + n_true).clamp_min(1))
    iou = torch.where(both_empty, 1.0, inter / union.clamp_min(1))
    if empty == "nan":
        dice = torch.where(n_true > 0, dice, math.nan)
        iou = torch.where(n_true > 0, iou, math.nan)
    return dice, iou


def mean_std(values: Sequence[float] | Tensor) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of ``values``, ignoring NaNs.

    One value gives std 0.0; no (non-NaN) value gives (nan, nan).
    """
    data = torch.as_tensor(values, dtype=torch.float64).flatten()
    data = data[~torch.isnan(data)]
    n = data.numel()
    if n == 0:
        return math.nan, math.nan
    mean = float(data.mean())
    std = float(data.std(correction=1)) if n > 1 else 0.0
    return mean, std
