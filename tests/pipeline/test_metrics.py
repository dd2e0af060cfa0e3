"""Metrics against MONAI DiceMetric / MeanIoU and hand cases of the empty conventions."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
import torch.nn.functional as F
from monai.metrics import DiceMetric, MeanIoU

from pipeline.metrics import dice_iou, dice_iou_per_class, mean_std


def _onehot(mask: torch.Tensor, k: int) -> torch.Tensor:
    return F.one_hot(mask, k).permute(0, 3, 1, 2).float()  # (B, K, H, W)


def _monai(pred: torch.Tensor, target: torch.Tensor, k: int, ignore_empty: bool, reduction: str):
    """MONAI Dice and IoU (foreground only) and how many classes each image averaged."""
    results = []
    for kind in (DiceMetric, MeanIoU):
        metric = kind(
            include_background=False,
            reduction=reduction,
            get_not_nans=True,
            ignore_empty=ignore_empty,
        )
        metric(y_pred=_onehot(pred, k), y=_onehot(target, k))
        value, not_nans = metric.aggregate()
        results.append((value.double(), not_nans))
    return results


def _random_masks(seed: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, k, (6, 9, 7), generator=gen)
    target = torch.randint(0, k, (6, 9, 7), generator=gen)
    target[0] = 0  # empty ground truth, non-empty prediction
    target[1], pred[1] = 0, 0  # both empty
    target[2][target[2] == k - 1] = 0  # last class absent from the ground truth only
    pred[3] = 0  # empty prediction
    return pred, target


@pytest.mark.parametrize(("seed", "k"), [(0, 2), (1, 3), (2, 4)])
def test_nan_convention_matches_monai_ignore_empty(seed: int, k: int) -> None:
    pred, target = _random_masks(seed, k)
    ours = dice_iou(pred, target, k, empty="nan")
    per_image = _monai(pred, target, k, ignore_empty=True, reduction="mean_channel")
    overall = _monai(pred, target, k, ignore_empty=True, reduction="mean")
    for value, (expected, counted), (mean, _) in zip(ours, per_image, overall, strict=True):
        # MONAI writes 0 for an image without any foreground class and counts it 0 times;
        # we write NaN there, which mean_std skips: the dataset means agree
        expected = torch.where(counted > 0, expected, math.nan)
        torch.testing.assert_close(value, expected, equal_nan=True)
        assert mean_std(value)[0] == pytest.approx(mean.item(), rel=1e-6)


@pytest.mark.parametrize(("seed", "k"), [(3, 2), (4, 3)])
def test_one_convention_matches_monai_keep_empty(seed: int, k: int) -> None:
    pred, target = _random_masks(seed, k)
    ours = dice_iou(pred, target, k)
    per_image = _monai(pred, target, k, ignore_empty=False, reduction="mean_channel")
    for value, (expected, _) in zip(ours, per_image, strict=True):
        torch.testing.assert_close(value, expected)


def test_hand_cases() -> None:
    gt = torch.tensor([[[1, 0], [0, 0]], [[0, 0], [0, 0]], [[0, 0], [0, 0]], [[1, 1], [0, 0]]])
    pred = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 0]], [[0, 1], [0, 0]], [[0, 0], [0, 0]]])
    dice, iou = dice_iou(pred, gt, 2)
    # overlap 1 of |P|=2, |G|=1; both empty; GT empty, pred not; pred empty, GT not
    assert dice.tolist() == pytest.approx([2 / 3, 1.0, 0.0, 0.0])
    assert iou.tolist() == pytest.approx([1 / 2, 1.0, 0.0, 0.0])
    dice, iou = dice_iou(pred, gt, 2, empty="nan")
    assert dice[0].item() == pytest.approx(2 / 3) and dice[3].item() == 0.0
    assert math.isnan(dice[1].item()) and math.isnan(dice[2].item())
    assert math.isnan(iou[1].item()) and math.isnan(iou[2].item())


def test_three_class_hand_case_averages_foreground_classes() -> None:
    gt = torch.tensor([[[1, 1, 2, 2]]])
    pred = torch.tensor([[[1, 0, 2, 2]]])
    dice, iou = dice_iou(pred, gt, 3)
    assert dice.item() == pytest.approx((2 / 3 + 1.0) / 2)
    assert iou.item() == pytest.approx((1 / 2 + 1.0) / 2)
    # class 2 absent from both: "one" counts it as 1.0, "nan" leaves it out
    gt2, pred2 = torch.tensor([[[1, 1, 0, 0]]]), torch.tensor([[[1, 0, 0, 0]]])
    assert dice_iou(pred2, gt2, 3)[0].item() == pytest.approx((2 / 3 + 1.0) / 2)
    assert dice_iou(pred2, gt2, 3, empty="nan")[0].item() == pytest.approx(2 / 3)


@pytest.mark.parametrize(("seed", "k", "empty"), [(5, 3, "one"), (6, 4, "one"), (7, 3, "nan")])
def test_per_class_matches_monai_per_channel(seed: int, k: int, empty: str) -> None:
    pred, target = _random_masks(seed, k)
    dice, iou = dice_iou_per_class(pred, target, k, empty=empty)  # type: ignore[arg-type]
    assert dice.shape == (6, k - 1) and iou.shape == (6, k - 1)
    for ours, kind in ((dice, DiceMetric), (iou, MeanIoU)):
        metric = kind(include_background=False, reduction="none", ignore_empty=empty == "nan")
        expected = metric(y_pred=_onehot(pred, k), y=_onehot(target, k)).double()  # (B, K-1)
        torch.testing.assert_close(ours, expected, equal_nan=True)
    if empty == "one":  # the per-class means average to the overall mean
        overall = dice_iou(pred, target, k)[0].mean()
        assert dice.mean(0).mean().item() == pytest.approx(overall.item())


def test_dice_iou_errors() -> None:
    mask = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="empty must be 'one' or 'nan', got 'zero'"):
        dice_iou(mask, mask, 2, empty="zero")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 1\], got values in"):
        dice_iou(mask, mask + 2, 2)
    with pytest.raises(ValueError, match="pred and target must have the same shape"):
        dice_iou(mask, mask[:, :3], 2)
    with pytest.raises(ValueError, match="pred must hold integer class indices"):
        dice_iou(mask.float(), mask, 2)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        dice_iou(mask, mask, 1)


def test_mean_std() -> None:
    values = [0.8, 0.9, 0.7, 0.85]
    mean, std = mean_std(values)
    assert mean == pytest.approx(statistics.mean(values))
    assert std == pytest.approx(statistics.stdev(values))
    assert mean_std([1.0, math.nan, 3.0]) == pytest.approx((2.0, math.sqrt(2.0)))
    assert mean_std(torch.tensor([0.5])) == (0.5, 0.0)
    assert mean_std(torch.tensor([[1.0, 2.0], [3.0, 4.0]])) == pytest.approx(
        (2.5, statistics.stdev([1, 2, 3, 4]))
    )
    empty = mean_std([math.nan])
    assert math.isnan(empty[0]) and math.isnan(empty[1])
    assert all(math.isnan(v) for v in mean_std([]))
