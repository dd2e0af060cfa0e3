"""One precompute task: a shard of the train split through the team, cascade, SC and stats.

A shard is the unit of writing of the label store, so each task owns whole shards. Pass 1
(``banks=None``) writes every shard whose images need no cross-image bank and returns seeded
bank samples; pass 2 finishes the deferred shards with the complete banks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pipeline.check import class_argmax

if TYPE_CHECKING:
    from stages.data import SplitData
    from stages.team import Team, TeamOutput

logger = logging.getLogger(__name__)

SC_BASES = {"teacher_sc": "teacher", "plc": "teacher_fa_ba"}  # SC variant -> the map it corrects


@dataclass(frozen=True)
class ShardJob:
    """Everything one shard task needs; picklable for Dask workers."""

    inputs: dict[str, str]
    tmp_path: str
    start: int
    stop: int
    batch_size: int
    backend: str
    smoothing: float
    bank_per_class: int
    seed: int
    device: str
    banks: dict | None = None  # None in pass 1; {"teacher": ClassBank, "teacher_fa_ba": ClassBank}
    cache_mb: int = 0  # in-process: keep pass-1 outputs of deferred shards for pass 2, up to this


@dataclass
class ShardOutcome:
    start: int
    stop: int
    written: bool
    samples: dict[str, list] = field(default_factory=dict)  # base variant -> per-image samples


def stat_names(variants: tuple[str, ...]) -> list[str]:
    """Per-image stats stored beside the soft labels."""
    names = [f"false_pixels_{v}" for v in variants] + [f"dice_{v}" for v in variants]
    return names + [f"sc_{kind}_{v}" for v in SC_BASES for kind in ("in_image", "bank", "onehot")]


def cascade_maps(out: TeamOutput, gt: torch.Tensor) -> dict[str, torch.Tensor]:
    """The four cascade variants before SC: Y^I, Y^F, T + TA_b and Y^B."""
    from pipeline.cascade import replace_if_correct

    y_f = replace_if_correct(out.p_t, out.p_f, gt)
    return {
        "teacher": out.p_t,
        "teacher_fa": y_f,
        "teacher_ba": replace_if_correct(out.p_t, out.p_b, gt),
        "teacher_fa_ba": replace_if_correct(y_f, out.p_b, gt),
    }


def sc_variant(
    variant: str,
    maps: dict[str, torch.Tensor],
    feats: torch.Tensor,
    gt: torch.Tensor,
    job: ShardJob,
    banks: dict | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One SC variant of a batch (corrected per image) and its per-image SC counts."""
    from pipeline.sc import SCConfig, similarity_correct

    sc = SCConfig(backend=job.backend, smoothing=job.smoothing)
    base = SC_BASES[variant]
    bank = banks[base] if banks else None
    per_image = [
        similarity_correct(maps[base][i : i + 1], feats[i : i + 1], gt[i : i + 1], sc, bank)
        for i in range(gt.shape[0])
    ]
    counts = {
        f"sc_{kind}_{variant}": torch.tensor([float(info[f"sc_{kind}"]) for _, info in per_image])
        for kind in ("in_image", "bank", "onehot")
    }
    return torch.cat([p for p, _ in per_image]), counts


def _stats(maps: dict[str, torch.Tensor], gt: torch.Tensor, counts: dict) -> dict[str, np.ndarray]:
    from pipeline.cascade import false_pixels
    from pipeline.metrics import dice_iou

    stats = {}
    for v, p in maps.items():
        stats[f"false_pixels_{v}"] = false_pixels(p, gt).flatten(1).sum(1).double().cpu().numpy()
        dice, _ = dice_iou(class_argmax(p, 1).cpu(), gt.cpu(), p.shape[1])
        stats[f"dice_{v}"] = dice.double().numpy()
    stats.update({k: v.double().numpy() for k, v in counts.items()})
    return stats


# Pass-1 team outputs of deferred shards, kept in this process for pass 2 (in-process runs
# only; a Dask worker recomputes them, which gives the same values).
_DEFERRED: dict[tuple[str, int], list] = {}


def _outputs_mb(batches: list) -> float:
    tensors = [t for _, out, gt in batches for t in (out.p_t, out.p_f, out.p_b, out.feats, gt)]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def _cached_mb() -> float:
    return sum(_outputs_mb(batches) for batches in _DEFERRED.values())


def _team_batches(job: ShardJob, team: Team, data: SplitData, device: torch.device):
    """(idx, team output, gt) per batch of the shard, from the pass-1 cache where present."""
    cached = _DEFERRED.pop((job.tmp_path, job.start), None)
    if cached is not None:
        yield from cached
        return
    for lo in range(job.start, job.stop, job.batch_size):
        idx = torch.arange(lo, min(lo + job.batch_size, job.stop))
        images, gt = data.batch(idx, device)
        yield idx, team(images), gt


def process_shard(job: ShardJob) -> ShardOutcome:
    """Compute one shard; write it unless pass 1 finds it needs the cross-image bank."""
    from pipeline.cascade import needs_bank
    from pipeline.train import resolve_device
    from stages.team import cached_team
    from storage_schema import VARIANTS, LabelStoreWriter

    device = resolve_device(job.device)
    team = cached_team(
        job.inputs["teacher"], job.inputs["assistant_fp"], job.inputs["assistant_bd"], device
    )
    data = _cached_train(job.inputs["data"])
    outcome = ShardOutcome(
        job.start, job.stop, written=False, samples={b: [] for b in SC_BASES.values()}
    )
    soft: dict[str, list] = {v: [] for v in VARIANTS}
    stats: dict[str, list] = {}
    seen, deferred = [], False
    for idx, out, gt in _team_batches(job, team, data, device):
        maps = cascade_maps(out, gt)
        if job.banks is None:  # pass 1: keep outputs in case the shard is deferred
            seen.append((idx, out, gt))
            for base, samples in bank_samples(
                out.p_t, maps["teacher_fa_ba"], out.feats, gt, idx, job
            ).items():
                outcome.samples[base].extend(samples)
            deferred = deferred or bool(
                (needs_bank(out.p_t, gt) | needs_bank(maps["teacher_fa_ba"], gt)).any()
            )
        if deferred:
            continue  # pass 2 finishes this shard once the banks are complete
        counts = {}
        for variant in SC_BASES:
            maps[variant], c = sc_variant(variant, maps, out.feats, gt, job, job.banks)
            counts.update(c)
        for v in VARIANTS:
            soft[v].append(torch.log(maps[v].clamp_min(1e-12)).cpu().numpy())
        for k, arr in _stats(maps, gt, counts).items():
            stats.setdefault(k, []).append(arr)
    if deferred:
        if _cached_mb() + _outputs_mb(seen) <= job.cache_mb:
            _DEFERRED[(job.tmp_path, job.start)] = seen
        return outcome
    writer = LabelStoreWriter.open(job.tmp_path)
    writer.write_shard(
        job.start,
        {v: np.concatenate(arrays) for v, arrays in soft.items()},
        {k: np.concatenate(a) for k, a in stats.items()},
    )
    outcome.written = True
    return outcome


def bank_samples(
    p_t: torch.Tensor,
    y_b: torch.Tensor,
    feats: torch.Tensor,
    gt: torch.Tensor,
    idx: torch.Tensor,
    job: ShardJob,
) -> dict:
    """Seeded per-image samples of correct pixels for the banks of both SC variants.

    The generator of image ``j`` depends only on (seed, j): the bank never depends on scheduling.
    """
    from pipeline.cascade import sample_correct_pixels

    samples: dict[str, list] = {}
    for base, probs in (("teacher", p_t), ("teacher_fa_ba", y_b)):
        samples[base] = []
        for i, j in enumerate(idx.tolist()):
            g = torch.Generator().manual_seed(job.seed * 1_000_003 + j)
            samples[base].append(
                sample_correct_pixels(
                    probs[i].cpu(), feats[i].cpu(), gt[i].cpu(), job.bank_per_class, g
                )
            )
    return samples


_TRAIN: dict[str, object] = {}


def _cached_train(data_path: str):
    from stages.data import load_split, open_store

    if data_path not in _TRAIN:
        _TRAIN[data_path] = load_split(open_store(Path(data_path)), "train")
    return _TRAIN[data_path]


def clear_deferred() -> None:
    """Drop pass-1 outputs kept for pass 2 (called when a precompute run ends)."""
    _DEFERRED.clear()
