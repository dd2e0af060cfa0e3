"""Live teacher-team labels for ``plc distill --live``: the store's labels, recomputed each step.

Used for benchmarks (what the store saves) and for the consistency check that live and stored
labels agree within the encoding error on un-augmented inputs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from stages.data import SplitData, epoch_batches

logger = logging.getLogger(__name__)


class LiveLabels:
    """Computes one variant with the team the label store was built from, batch by batch."""

    def __init__(self, label_store, variant: str, train: SplitData, device: torch.device):
        from pipeline.sc import ClassBank
        from stages.shard import SC_BASES, ShardJob, bank_samples, cascade_maps
        from stages.team import Team

        prov = label_store.provenance
        nets = {role: Path(n["path"]) for role, n in prov["networks"].items()}
        pc = prov["precompute"]
        self.variant, self.device = variant, device
        self.team = Team.load(nets["teacher"], nets["assistant_fp"], nets["assistant_bd"], device)
        self.job = ShardJob(
            inputs={},
            tmp_path="",
            start=0,
            stop=0,
            batch_size=pc["batch_size"],
            backend=pc["search_backend"],
            smoothing=pc["sc_smoothing"],
            bank_per_class=pc["bank_per_class"],
            seed=pc["seed"],
            device=str(device),
        )
        self.banks = None
        if variant in SC_BASES:  # SC may need the cross-image bank: build it as precompute does
            samples: dict[str, list] = {b: [] for b in SC_BASES.values()}
            for idx in epoch_batches(len(train), pc["batch_size"], 0, 0, shuffle=False):
                images, gt = train.batch(idx, device)
                out = self.team(images)
                y_b = cascade_maps(out, gt)["teacher_fa_ba"]
                for base, s in bank_samples(out.p_t, y_b, out.feats, gt, idx, self.job).items():
                    samples[base].extend(s)
            self.banks = {b: ClassBank.from_samples(s) for b, s in samples.items()}

    def __call__(
        self, idx: torch.Tensor, images: torch.Tensor, masks: torch.Tensor
    ) -> torch.Tensor:
        """Log-probabilities (B, C, H, W) of ``variant`` for un-augmented ``images``."""
        from stages.shard import SC_BASES, cascade_maps, sc_variant

        gt = masks.to(self.device)
        out = self.team(images)
        maps = cascade_maps(out, gt)
        if self.variant in SC_BASES:
            probs, _ = sc_variant(self.variant, maps, out.feats, gt, self.job, self.banks)
        else:
            probs = maps[self.variant]
        return torch.log(probs.clamp_min(1e-12)).cpu()
