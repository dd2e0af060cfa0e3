"""ResNet-50 v2 style CNN encoder of the R50-ViT-B/16 hybrid (TransUNet, Chen et al. 2021).

Follows the TransUNet reference `ResNetV2`: weight-standardised convolutions, GroupNorm,
bottleneck units with the projection on the shortcut, a 7×7 stride-2 stem and three stages
(3, 4, 9 units at the reference size). Skip features come out at 1/2, 1/4 and 1/8 of the
input, the deepest map at 1/16.

One deliberate difference: the stem max-pool uses ``padding=1`` so that every side that is a
multiple of 16 halves exactly; the reference uses ``padding=0`` and zero-pads the features
back to the expected size afterwards. Neither has parameters, so counts are unchanged and the
official ImageNet-21k weights (``--init``, `pipeline.models.pretrained`) load as they are; the
pooled map is aligned one pixel differently from the official network (effect not measured).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)


class StdConv2d(nn.Conv2d):
    """Conv2d with weight standardisation (zero mean, unit variance per output filter)."""

    def forward(self, x: Tensor) -> Tensor:
        """Convolve ``x`` (B, Cin, H, W) with the standardised weight -> (B, Cout, H', W')."""
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, unbiased=False)
        weight = (self.weight - mean) / torch.sqrt(var + 1e-5)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _std_conv(cin: int, cout: int, kernel: int, stride: int = 1) -> StdConv2d:
    return StdConv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)


class Bottleneck(nn.Module):
    """Bottleneck unit: 1×1 → 3×3 (stride here) → 1×1, GroupNorm, projected shortcut."""

    def __init__(self, cin: int, cout: int, cmid: int, stride: int, groups: int) -> None:
        super().__init__()
        self.conv1 = _std_conv(cin, cmid, 1)
        self.gn1 = nn.GroupNorm(groups, cmid, eps=1e-6)
        self.conv2 = _std_conv(cmid, cmid, 3, stride)
        self.gn2 = nn.GroupNorm(groups, cmid, eps=1e-6)
        self.conv3 = _std_conv(cmid, cout, 1)
        self.gn3 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            # the reference normalises the projection per channel: GroupNorm(cout, cout)
            self.downsample = nn.Sequential(
                _std_conv(cin, cout, 1, stride), nn.GroupNorm(cout, cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        """(B, cin, H, W) -> (B, cout, H / stride, W / stride)."""
        residual = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.gn1(self.conv1(x)))
        y = F.relu(self.gn2(self.conv2(y)))
        y = self.gn3(self.conv3(y))
        return F.relu(residual + y)


def _stage(cin: int, cout: int, cmid: int, units: int, stride: int, groups: int) -> nn.Sequential:
    blocks = [Bottleneck(cin, cout, cmid, stride, groups)]
    blocks += [Bottleneck(cout, cout, cmid, 1, groups) for _ in range(units - 1)]
    return nn.Sequential(*blocks)


class ResNetV2Encoder(nn.Module):
    """Stem + three bottleneck stages of width ``w``: channels w, 4w, 8w, 16w.

    Args:
        width: stem width ``w`` (64 in R50).
        block_units: units per stage ((3, 4, 9) in the TransUNet hybrid).
        groups: GroupNorm groups (32 in R50; must divide ``width``).
    """

    def __init__(self, width: int, block_units: tuple[int, int, int], groups: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            StdConv2d(3, width, 7, stride=2, padding=3, bias=False),
            nn.GroupNorm(groups, width, eps=1e-6),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.stage1 = _stage(width, 4 * width, width, block_units[0], 1, groups)
        self.stage2 = _stage(4 * width, 8 * width, 2 * width, block_units[1], 2, groups)
        self.stage3 = _stage(8 * width, 16 * width, 4 * width, block_units[2], 2, groups)
        self.skip_channels = (8 * width, 4 * width, width)
        self.out_channels = 16 * width

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Encode ``x`` (B, 3, H, W).

        Returns:
            The deepest map (B, 16w, H/16, W/16) and the skips, deepest first:
            [(B, 8w, H/8, W/8), (B, 4w, H/4, W/4), (B, w, H/2, W/2)].
        """
        half = self.stem(x)
        quarter = self.stage1(self.pool(half))
        eighth = self.stage2(quarter)
        return self.stage3(eighth), [eighth, quarter, half]
