"""Tiny "private" networks as a user would export them for ``--teacher``: no registry code.

``TinySeg`` returns logits only, ``TinySegWithFeatures`` returns ``(logits, features)`` with
the features at half resolution (so the adapter's resize runs). Both script and trace. The
``Bad*`` networks each break one rule of the TorchScript teacher contract.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TinySeg(nn.Module):
    """Two 3×3 convs and a 1×1 head: (B, 3, H, W) → logits (B, C, H, W)."""

    def __init__(self, num_classes: int = 2, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class TinySegWithFeatures(TinySeg):
    """``TinySeg`` returning ``(logits, features (B, width, H/2, W/2))``."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        feats = self.body(x)
        return self.head(feats), F.avg_pool2d(feats, 2)


class HalfSize(TinySeg):
    """Logits at half the input's size (a network without its final upsampling)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(self.head(self.body(x)), 2)


class WithNaN(TinySeg):
    """Logits with one NaN pixel."""

    def forward(self, x: Tensor) -> Tensor:
        out = self.head(self.body(x))
        out[:, 0, 0, 0] = float("nan")
        return out


class ReturnsList(TinySeg):
    """``[logits, features]``: a list, not the tuple the contract names."""

    def forward(self, x: Tensor) -> list[Tensor]:  # type: ignore[override]
        feats = self.body(x)
        return [self.head(feats), feats]


class WantsFourChannels(TinySeg):
    """Raises on RGB input, as a network exported for RGBA images would."""

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != 4:
            raise RuntimeError("expected RGBA input with 4 channels")
        return self.head(self.body(x[:, :3]))


@torch.no_grad()
def set_foreground_share(net: TinySeg, images: Tensor, share: float, gain: float = 20.0) -> None:
    """Scale and shift ``net``'s 2-class head so that about ``share`` of the pixels of
    ``images`` are foreground, with margins of a few logits (a random net is near-constant)."""
    feats = net.body(images)  # (B, W, H, W)
    margin = (net.head(feats)[:, 1] - net.head(feats)[:, 0]).flatten()
    bias = net.head.bias[1] - net.head.bias[0]
    scale = gain / float((margin - bias).std())
    shift = float(torch.quantile((margin - bias) * scale, 1 - share))
    net.head.weight.mul_(scale)
    net.head.bias.copy_(torch.tensor([shift / 2, -shift / 2]))


def export(net: nn.Module, path: Path, how: str, example: Tensor | None = None) -> Path:
    """``torch.jit.save`` ``net`` (in eval mode) scripted or traced on ``example``."""
    net = net.eval()
    script = torch.jit.script(net) if how == "script" else torch.jit.trace(net, example)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(script, str(path))
    return path
