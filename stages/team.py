"""The teacher team at inference: T, TA_f and TA_b loaded once and run together.

The team is state of its owner (a precompute worker, live KD), never a module cache; it is
identified by the SHA-256 of its three checkpoints (:func:`team_key`), not by their paths.
"""

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

    @property
    def assistants(self) -> dict[str, torch.Tensor]:
        """Assistant key of :data:`pipeline.variants.ASSISTANTS` -> probabilities."""
        return {"fp": self.p_f, "bd": self.p_b}


def team_key(teacher: Path, fp: Path, bd: Path) -> str:
    """One SHA-256 over the three checkpoints' SHA-256 (T, TA_f, TA_b order)."""
    import hashlib

    from pipeline.checkpoint import file_sha256

    joined = ":".join(file_sha256(p) for p in (teacher, fp, bd))
    return hashlib.sha256(joined.encode()).hexdigest()


class Team:
    """Teacher plus both assistants, in eval mode on one device."""

    def __init__(self, teacher: nn.Module, fp: nn.Module, bd: nn.Module, device: torch.device):
        self.device = device
        self.nets = [net.to(device).eval() for net in (teacher, fp, bd)]

    def close(self) -> None:
        """Drop the networks (and the CUDA cache they used)."""
        self.nets = []
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

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
