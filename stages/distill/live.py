"""Live teacher-team labels for ``plc distill --live``: the store's labels, recomputed each step.

Used for benchmarks (what the store saves) and for the consistency check that live and stored
labels agree within the encoding error on un-augmented inputs. The labels come from the same
functions as precompute's (:func:`pipeline.cascade.build_variants` on the variant's row only).
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
        from pipeline.cascade import ClassBank, SCConfig, cascade
        from pipeline.variants import get_variant, sc_base
        from stages.precompute.shard import bank_samples
        from stages.precompute.team import Team

        prov = label_store.provenance
        nets = {role: Path(n["path"]) for role, n in prov["networks"].items()}
        pc = prov["precompute"]
        self.row, self.device = get_variant(variant), device
        self.cfg = SCConfig(
            backend=pc["search_backend"], smoothing=pc["sc_smoothing"],
            knn_k=pc.get("sc_knn_k", 8), confident_quantile=pc.get("sc_confident_quantile", 0.5),
        )  # fmt: skip
        self.gt_smoothing = pc.get("gt_smoothing", 0.1)
        cal = prov.get("calibration")  # stores made before plc_cal have none
        temps = {"fp": cal["fp"], "bd": cal["bd"]} if cal else None
        sc = prov.get("sc_features")  # "teacher" or an assistant's (stores before it: T's)
        self.team = Team.load(
            nets["teacher"],
            nets["assistant_fp"],
            nets["assistant_bd"],
            device,
            temps,
            sc_features=None if sc in (None, "teacher") else sc,
        )
        self.ids = train.ids  # an imported teacher looks its maps up by image id
        self.seed = pc["seed"]
        self.banks = None
        if self.row.sc and self.row.rule != "swap":  # the bank, built as precompute does
            base = sc_base(self.row)
            samples: list = []
            for idx in epoch_batches(len(train), pc["batch_size"], 0, 0, shuffle=False):
                images, gt = train.batch(idx, device)
                out = self.team(images, [self.ids[i] for i in idx.tolist()])
                casc = cascade(out.p_t, out.assistants, gt, (base,))
                batch = bank_samples(
                    casc, out.feats, idx, pc["bank_per_class"], pc["seed"], (base.name,)
                )
                samples.extend(batch[base.name])
            self.banks = {base.name: ClassBank.from_samples(samples).to(device)}

    def __call__(
        self, idx: torch.Tensor, images: torch.Tensor, masks: torch.Tensor
    ) -> torch.Tensor:
        """Log-probabilities (B, C, H, W) of the variant for un-augmented ``images``, the
        train images at positions ``idx``."""
        from pipeline.cascade import build_variants
        from stages.precompute.shard import random_seeds

        gt = masks.to(self.device)
        out = self.team(images, [self.ids[i] for i in torch.as_tensor(idx).tolist()])
        maps, _ = build_variants(
            out.p_t, out.assistants, out.feats, gt, self.cfg, self.banks, (self.row,),
            self.gt_smoothing, random_seeds(self.seed, torch.as_tensor(idx)),
        )  # fmt: skip
        return torch.log(maps[self.row.name].clamp_min(1e-12)).cpu()
