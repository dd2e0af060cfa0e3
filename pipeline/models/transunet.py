"""TransUNet (Chen et al. 2021): R50-ViT-B/16 hybrid encoder + cascaded upsampler.

Structure of the reference `VisionTransformer` of the TransUNet code, written in plain torch:
ResNet-50 v2 stem and stages (3, 4, 9) → ViT-B/16 on the 1/16 map → 3×3 conv to 512 →
four decoder blocks (bilinear ×2, concat skip at 1/8, 1/4, 1/2, none at full size, two
conv-BN-ReLU; channels 256, 128, 64, 16) → 3×3 conv head. The 16-channel map before the head,
at full input resolution, is the feature map SC searches in. ≈105.3 M parameters at 224²
with 2 classes. Nothing is downloaded: a network starts random unless ``--init`` gives it the
official ImageNet-21k ``R50+ViT-B_16.npz`` (or a state_dict); see `pipeline.models.pretrained`.

Inputs may be any size whose sides are multiples of 16: position embeddings are built for
``img_size`` and interpolated bicubically for other grids (see `vit.PatchEmbedding`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.common import check_image_batch, check_taps, conv_bn_relu
from pipeline.models.resnet import ResNetV2Encoder
from pipeline.models.vit import VisionTransformer

logger = logging.getLogger(__name__)

SIZE_MULTIPLE = 16


def _require(ok: bool, field: str, allowed: str, value: object) -> None:
    if not ok:
        raise ValueError(f"TransUNetConfig.{field} must be {allowed}, got {value!r}.")


@dataclass(frozen=True)
class TransUNetConfig:
    """TransUNet hyper-parameters; the defaults are the reference R50-ViT-B/16 model.

    Attributes:
        num_classes: output classes K (>= 2, background included).
        img_size: side the position embeddings are built for (multiple of 16).
        width: ResNet stem width (64); stages have 4, 8, 16 × width channels.
        block_units: bottleneck units in the three ResNet stages.
        gn_groups: GroupNorm groups in the ResNet; must divide ``width``.
        hidden, layers, heads, mlp_dim: ViT width, depth, heads, MLP width.
        dropout, attn_dropout: ViT dropout rates.
        head_channels: channels of the conv between ViT and decoder (512).
        decoder_channels: output channels of the four decoder blocks; the last is F.
    """

    num_classes: int = 2
    img_size: int = 224
    width: int = 64
    block_units: tuple[int, int, int] = (3, 4, 9)
    gn_groups: int = 32
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    dropout: float = 0.1
    attn_dropout: float = 0.0
    head_channels: int = 512
    decoder_channels: tuple[int, int, int, int] = (256, 128, 64, 16)

    def __post_init__(self) -> None:
        _require(self.num_classes >= 2, "num_classes", "an integer >= 2", self.num_classes)
        _require(
            self.img_size > 0 and self.img_size % SIZE_MULTIPLE == 0,
            "img_size",
            f"a positive multiple of {SIZE_MULTIPLE}",
            self.img_size,
        )
        _require(
            self.width > 0 and self.gn_groups > 0 and self.width % self.gn_groups == 0,
            "gn_groups",
            f"a positive divisor of width={self.width}",
            self.gn_groups,
        )
        _require(
            len(self.block_units) == 3 and min(self.block_units) >= 1,
            "block_units",
            "three integers >= 1",
            self.block_units,
        )
        _require(
            self.heads > 0 and self.hidden % self.heads == 0,
            "heads",
            f"a positive divisor of hidden={self.hidden}",
            self.heads,
        )
        _require(
            len(self.decoder_channels) == 4 and min(self.decoder_channels) >= 1,
            "decoder_channels",
            "four integers >= 1",
            self.decoder_channels,
        )
        for field in ("layers", "mlp_dim", "head_channels"):
            _require(getattr(self, field) >= 1, field, "an integer >= 1", getattr(self, field))
        for field in ("dropout", "attn_dropout"):
            _require(0.0 <= getattr(self, field) < 1.0, field, "in [0, 1)", getattr(self, field))


TINY_TRANSUNET = {
    "width": 8,
    "block_units": (1, 1, 1),
    "gn_groups": 4,
    "hidden": 32,
    "layers": 2,
    "heads": 2,
    "mlp_dim": 64,
    "head_channels": 32,
    "decoder_channels": (32, 16, 16, 16),
}
"""Overrides of `TransUNetConfig` for the tiny CPU config (`transunet-tiny`)."""


class DecoderBlock(nn.Module):
    """Bilinear ×2 (align_corners=True, as the reference), concat skip, two conv-BN-ReLU."""

    def __init__(self, cin: int, cout: int, skip_channels: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(cin + skip_channels, cout)
        self.conv2 = conv_bn_relu(cout, cout)

    def forward(self, x: Tensor, skip: Tensor | None) -> Tensor:
        """(B, cin, h, w) [+ skip (B, S, 2h, 2w)] -> (B, cout, 2h, 2w)."""
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)  # (B, cin + S, 2h, 2w)
        return self.conv2(self.conv1(x))


class TransUNet(nn.Module):
    """R50-ViT-B/16 TransUNet; see the module docstring.

    Attributes:
        num_classes: K, channels of the logits.
        feature_channels: F, channels of the SC feature map (last decoder block).
        size_multiple: input sides must be multiples of this (16).
        model_name: registry name used in messages ("transunet" unless the registry says).
    """

    size_multiple: int = SIZE_MULTIPLE

    def __init__(self, config: TransUNetConfig | None = None, model_name: str = "transunet"):
        super().__init__()
        cfg = config or TransUNetConfig()
        self.config = cfg
        self.model_name = model_name
        self.num_classes = cfg.num_classes
        self.feature_channels = cfg.decoder_channels[-1]
        self.encoder = ResNetV2Encoder(cfg.width, cfg.block_units, cfg.gn_groups)
        grid = (cfg.img_size // SIZE_MULTIPLE, cfg.img_size // SIZE_MULTIPLE)
        self.transformer = VisionTransformer(
            self.encoder.out_channels, grid, cfg.hidden, cfg.layers, cfg.heads,
            cfg.mlp_dim, cfg.dropout, cfg.attn_dropout,
        )  # fmt: skip
        self.conv_more = conv_bn_relu(cfg.hidden, cfg.head_channels)
        ins = (cfg.head_channels, *cfg.decoder_channels[:-1])
        skips = (*self.encoder.skip_channels, 0)
        self.decoder = nn.ModuleList(
            DecoderBlock(cin, cout, skip)
            for cin, cout, skip in zip(ins, cfg.decoder_channels, skips, strict=True)
        )
        self.head = nn.Conv2d(self.feature_channels, cfg.num_classes, kernel_size=3, padding=1)

    taps: tuple[str, ...] = ("r50_half", "r50_quarter", "r50_eighth", "r50_deep", "vit",
                             "dec1", "dec2", "dec3", "dec4")  # fmt: skip
    kd_taps: tuple[str, ...] = ("vit", "dec2")  # as UNet's: deep, then H/4 (--taps default)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Segment ``x`` and return the SC features too.

        Args:
            x: images (B, 3, H, W), float, H and W multiples of 16.

        Returns:
            logits (B, K, H, W) and the last decoder feature map (B, F, H, W).
        """
        logits, maps = self._run(x, frozenset({"dec4"}))
        return logits, maps["dec4"]

    def forward_taps(self, x: Tensor, taps: tuple[str, ...]) -> tuple[Tensor, dict[str, Tensor]]:
        """Segment ``x`` and return the named intermediate maps (:attr:`taps`) too: the R50
        stages (``r50_half`` … ``r50_eighth``: the skips at H/2, H/4, H/8; ``r50_deep`` at
        H/16), ``vit`` (the transformer's output reshaped to (B, hidden, H/16, W/16)) and the
        decoder blocks ``dec1`` … ``dec4`` (H/8 … H; ``dec4`` is the SC feature map).

        Returns:
            logits (B, K, H, W) and ``{name: (B, channels, h, w)}`` for each tap asked for.
        """
        return self._run(x, check_taps(self.model_name, taps, self.taps))

    def _run(self, x: Tensor, keep: frozenset[str]) -> tuple[Tensor, dict[str, Tensor]]:
        check_image_batch(x, self.model_name, self.size_multiple)
        deep, skips = self.encoder(x)  # skips deepest first: H/8, H/4, H/2
        found = dict(zip(("r50_eighth", "r50_quarter", "r50_half"), skips, strict=True))
        found["r50_deep"] = deep
        found["vit"] = self.transformer(deep)  # (B, hidden, H/16, W/16)
        maps = {name: found[name] for name in keep if name in found}
        y = self.conv_more(found["vit"])  # (B, head_channels, H/16, W/16)
        for i, (block, skip) in enumerate(zip(self.decoder, [*skips, None], strict=True), 1):
            y = block(y, skip)
            if f"dec{i}" in keep:
                maps[f"dec{i}"] = y
        return self.head(y), maps

    def forward(self, x: Tensor) -> Tensor:
        """Images (B, 3, H, W) -> logits (B, K, H, W)."""
        return self.forward_features(x)[0]
