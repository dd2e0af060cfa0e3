"""Classic UNet (Ronneberger et al. 2015) with BatchNorm, as in the common PyTorch port.

Double conv (3×3, no bias, BN, ReLU, twice), four max-pool downs doubling the channels
(base, 2b, 4b, 8b, 16b), four transposed-conv ups (``bilinear=False``) halving them, each
followed by a double conv on [up, skip], then a 1×1 conv head. Padded convolutions, so the
output has the input's size; sides must be multiples of 16 (four halvings). ≈31.04 M
parameters at base 64 with 2 classes. The ``base``-channel map before the head, at full
resolution, is the feature map returned by `forward_features`. Named intermediate maps
(feature taps, for feature-based KD): ``bottleneck`` (16·base, H/16) and ``dec1`` … ``dec4``
(8·base at H/8 … base at H; ``dec4`` is the feature map), through `forward_taps`.

``signed_features`` ends the last decoder conv at its BatchNorm, without the ReLU, so the
head reads signed features. A narrow UNet needs it: behind a ReLU the head of a base-2 or
base-4 UNet can settle with every foreground-minus-background weight negative, and then no
pixel can ever be called foreground (p_fg <= sigmoid of the bias difference) while no
gradient reaches the zeroed features to undo it (seen for ``unet-micro``, seed 1, and for
base 2 on the synthetic data: reports/synthetic-capacity.md).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pipeline.models.common import check_image_batch, check_taps, conv_bn_relu

logger = logging.getLogger(__name__)

SIZE_MULTIPLE = 16
DEPTH = 4
TAPS = ("bottleneck", *(f"dec{i}" for i in range(1, DEPTH + 1)))


@dataclass(frozen=True)
class UNetConfig:
    """UNet hyper-parameters.

    Attributes:
        num_classes: output classes K (>= 2, background included).
        base: channels of the first level (64 classic, 16 small, 8 tiny, 4 micro, 2 nano,
            96 wide).
        signed_features: the head reads the last BatchNorm's output, before its ReLU
            (see the module docstring); False is the classic UNet.
    """

    num_classes: int = 2
    base: int = 64
    signed_features: bool = False

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(
                f"UNetConfig.num_classes must be an integer >= 2, got {self.num_classes!r}."
            )
        if self.base < 1:
            raise ValueError(f"UNetConfig.base must be an integer >= 1, got {self.base!r}.")


def double_conv(cin: int, cout: int, last_relu: bool = True) -> nn.Sequential:
    """Two 3×3 conv-BN-ReLU (the last ReLU optional): (B, cin, H, W) -> (B, cout, H, W)."""
    first = conv_bn_relu(cin, cout)  # built first: the same initialisation for a seed as ever
    second = conv_bn_relu(cout, cout)
    if not last_relu:
        second[2] = nn.Identity()  # no parameters either way: the state-dict keys stay
    return nn.Sequential(first, second)


class Up(nn.Module):
    """Transposed conv ×2 halving the channels, concat skip, double conv."""

    def __init__(self, cin: int, cout: int, last_relu: bool = True) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin // 2, kernel_size=2, stride=2)
        self.conv = double_conv(cin, cout, last_relu)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """(B, cin, h, w) + skip (B, cin/2, 2h, 2w) -> (B, cout, 2h, 2w)."""
        x = torch.cat([skip, self.up(x)], dim=1)  # (B, cin, 2h, 2w)
        return self.conv(x)


class UNet(nn.Module):
    """Classic UNet; see the module docstring.

    Attributes:
        num_classes: K, channels of the logits.
        feature_channels: F = base, channels of the last decoder map.
        size_multiple: input sides must be multiples of this (16).
        model_name: registry name used in messages ("unet" unless the registry says).
    """

    size_multiple: int = SIZE_MULTIPLE

    def __init__(self, config: UNetConfig | None = None, model_name: str = "unet") -> None:
        super().__init__()
        cfg = config or UNetConfig()
        self.config = cfg
        self.model_name = model_name
        self.num_classes = cfg.num_classes
        self.feature_channels = cfg.base
        widths = [cfg.base * 2**level for level in range(DEPTH + 1)]  # base … 16·base
        self.inc = double_conv(3, widths[0])
        self.pool = nn.MaxPool2d(2)
        pairs = list(itertools.pairwise(widths))  # (base, 2·base), …, (8·base, 16·base)
        self.downs = nn.ModuleList(double_conv(a, b) for a, b in pairs)
        ups = list(reversed(pairs))
        self.ups = nn.ModuleList(
            Up(b, a, last_relu=not (cfg.signed_features and i == len(ups) - 1))
            for i, (a, b) in enumerate(ups)
        )
        self.head = nn.Conv2d(widths[0], cfg.num_classes, kernel_size=1)

    taps: tuple[str, ...] = TAPS
    # feature KD's default taps (``plc distill --taps``): a deep and a mid-level map; a
    # one-tap loss reads the last (H/4: small enough for relation maps, not yet the head's)
    kd_taps: tuple[str, ...] = ("bottleneck", "dec2")

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Segment ``x`` and return the last decoder feature map too.

        Args:
            x: images (B, 3, H, W), float, H and W multiples of 16.

        Returns:
            logits (B, K, H, W) and features (B, base, H, W).
        """
        logits, maps = self._run(x, frozenset({"dec4"}))
        return logits, maps["dec4"]

    def forward_taps(self, x: Tensor, taps: tuple[str, ...]) -> tuple[Tensor, dict[str, Tensor]]:
        """Segment ``x`` and return the named intermediate maps (:attr:`taps`) too.

        Args:
            x: images (B, 3, H, W), float, H and W multiples of 16.
            taps: names from :attr:`taps`.

        Returns:
            logits (B, K, H, W) and ``{name: (B, channels, h, w)}`` for each tap asked for.
        """
        return self._run(x, check_taps(self.model_name, taps, self.taps))

    def _run(self, x: Tensor, keep: frozenset[str]) -> tuple[Tensor, dict[str, Tensor]]:
        check_image_batch(x, self.model_name, self.size_multiple)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(self.pool(skips[-1])))
        y = skips.pop()
        maps = {"bottleneck": y} if "bottleneck" in keep else {}
        for i, up in enumerate(self.ups, start=1):
            y = up(y, skips.pop())
            if f"dec{i}" in keep:
                maps[f"dec{i}"] = y
        return self.head(y), maps

    def forward(self, x: Tensor) -> Tensor:
        """Images (B, 3, H, W) -> logits (B, K, H, W)."""
        return self.forward_features(x)[0]
