"""The teacher team at inference: T, TA_f and TA_b loaded once, run together, and cached."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass
class TeamOutput:
    """Softmax probabilities of the three networks and T's SC features.

    Attributes:
        p_t, p_f, p_b: (B, C, H, W) float32 probabilities of T, TA_f and TA_b.
        feats: (B, F, H, W) float32 last decoder feature map of T.
    """

    p_t: torch.Tensor
    p_f: torch.Tensor
    p_b: torch.Tensor
    feats: torch.Tensor


class Team:
    """Teacher plus both assistants, in eval mode on one device."""

    def __init__(self, teacher: nn.Module, fp: nn.Module, bd: nn.Module, device: torch.device):
        self.device = device
        self.nets = [net.to(device).eval() for net in (teacher, fp, bd)]

    @classmethod
    def load(cls, teacher: Path, fp: Path, bd: Path, device: torch.device) -> Team:
        from pipeline.checkpoint import build_from_checkpoint

        return cls(*(build_from_checkpoint(p)[0] for p in (teacher, fp, bd)), device=device)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> TeamOutput:
        """Run the team on (B, 3, H, W) float images in [0, 1]."""
        images = images.to(self.device, non_blocking=True)
        teacher, fp, bd = self.nets
        logits_t, feats = teacher.forward_features(images)
        return TeamOutput(
            p_t=logits_t.float().softmax(1),
            p_f=fp(images).float().softmax(1),
            p_b=bd(images).float().softmax(1),
            feats=feats.float(),
        )


_CACHE: dict[tuple, Team] = {}


def cached_team(teacher: Path, fp: Path, bd: Path, device: torch.device) -> Team:
    """Load the team once per process (a Dask worker reuses it across its shards)."""
    key = (str(teacher), str(fp), str(bd), str(device))
    if key not in _CACHE:
        _CACHE[key] = Team.load(teacher, fp, bd, device)
    return _CACHE[key]
