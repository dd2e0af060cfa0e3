"""precompute stage: run the teacher team ONCE over the train split → the label store.

Two passes over shards (a shard is the unit of writing, so each task owns whole shards):

1. every shard is computed; a shard is written at once unless one of its images has a GT class
   with no correct pixel left in that image (SC then needs the cross-image bank). Each image also
   contributes a seeded sample of its correct pixels to the per-class banks;
2. the banks are assembled in image order and the deferred shards are recomputed with them.

The result depends only on the inputs and the seed, never on how shards were scheduled, so an
in-process run and a Dask run write the same bytes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pipeline.check import class_argmax
from stages import paths
from stages.common import config_dict

if TYPE_CHECKING:
    from stages.data import SplitData
    from stages.team import Team, TeamOutput

logger = logging.getLogger(__name__)

SC_BASES = {"teacher_sc": "teacher", "plc": "teacher_fa_ba"}  # SC variant -> the map it corrects


@dataclass(frozen=True)
class PrecomputeConfig:
    """Options of ``plc precompute``; every path defaults from ``dataset``."""

    dataset: str
    data: Path | None = None
    teacher: Path | None = None
    assistant_fp: Path | None = None
    assistant_bd: Path | None = None
    out: Path | None = None
    batch_size: int = 16
    shard_size: int = 64
    search_backend: str = "auto"
    sc_smoothing: float = 0.1
    bank_per_class: int = 64
    seed: int = 0
    workers: int = 0
    scheduler: str | None = None
    cache_mb: int = 4096
    force: bool = False
    progress: bool = True
    device: str = "auto"

    def __post_init__(self) -> None:
        from pipeline.search import BACKENDS

        for name in ("batch_size", "shard_size", "bank_per_class"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}."
                )
        if self.search_backend not in BACKENDS:
            raise ValueError(
                f"--search-backend must be one of {', '.join(BACKENDS)}, got '{self.search_backend}'."
            )
        if not 0.0 <= self.sc_smoothing < 0.5:
            raise ValueError(f"--sc-smoothing must be in [0, 0.5), got {self.sc_smoothing}.")
        if self.cache_mb < 0:
            raise ValueError(f"--cache-mb must be >= 0, got {self.cache_mb}.")
        if self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers}.")

    def inputs(self) -> dict[str, Path]:
        """The four input artifacts with their conventional defaults."""
        ds = self.dataset
        return {
            "data": self.data or paths.data_path(ds),
            "teacher": self.teacher or paths.teacher_path(ds),
            "assistant_fp": self.assistant_fp or paths.assistant_path(ds, "false-pixel"),
            "assistant_bd": self.assistant_bd or paths.assistant_path(ds, "boundary"),
        }

    @property
    def out_path(self) -> Path:
        return self.out or paths.labels_path(self.dataset)


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


def _commands(ds: str) -> dict[str, str]:
    return {
        "data": f"plc prepare --dataset ... --out {paths.data_path(ds)}",
        "teacher": f"plc train-teacher --dataset {ds}",
        "assistant_fp": f"plc train-assistant --dataset {ds} --kind false-pixel",
        "assistant_bd": f"plc train-assistant --dataset {ds} --kind boundary",
    }


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
        seen.append((idx, out, gt))
        maps = cascade_maps(out, gt)
        if job.banks is None:
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


def _provenance(cfg: PrecomputeConfig, inputs: dict[str, Path], store) -> dict:
    from importlib.metadata import version

    from pipeline.checkpoint import file_sha256, load_checkpoint

    nets = {}
    for role in ("teacher", "assistant_fp", "assistant_bd"):
        meta = load_checkpoint(inputs[role])
        nets[role] = {
            "path": str(inputs[role]),
            "sha256": file_sha256(inputs[role]),
            "model_name": meta["model_name"],
            "config": meta["config"],
        }
    return {
        "dataset_path": str(inputs["data"]),
        "dataset_name": store.name,
        "split": "train",
        "networks": nets,
        "precompute": config_dict(cfg),
        "package": {"plc-kd": version("plc-kd"), "torch": torch.__version__},
    }


def _created() -> str:
    """Creation time; SOURCE_DATE_EPOCH (reproducible-builds convention) pins it for byte-identical stores."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    return when.isoformat(timespec="seconds")


def _is_current(out: Path, provenance: dict, manifest_sha: str) -> bool:
    from storage_schema import StoreError, open_label_store

    try:
        store = open_label_store(out, manifest_sha256=manifest_sha)
    except StoreError:
        return False
    old = store.provenance
    return (
        old.get("networks") == provenance["networks"]
        and old.get("precompute") == provenance["precompute"]
    )


def _run_jobs(jobs: list[ShardJob], cfg: PrecomputeConfig, desc: str) -> list[ShardOutcome]:
    """Run shard jobs in-process, on a LocalCluster (``workers``) or a scheduler."""
    from stages.progress import track

    if not jobs:
        return []
    if cfg.workers == 0 and cfg.scheduler is None:
        return list(track((process_shard(j) for j in jobs), desc, len(jobs), cfg.progress))
    from distributed import Client, LocalCluster, as_completed

    cluster = (
        None
        if cfg.scheduler
        else LocalCluster(
            n_workers=cfg.workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
    )
    with Client(cfg.scheduler or cluster) as client:
        futures = client.map(process_shard, jobs, pure=False)
        done = {
            f.key: f.result()
            for f in track(as_completed(futures), desc, len(futures), cfg.progress)
        }
        outcomes = [done[f.key] for f in futures]
    if cluster is not None:
        cluster.close()
    return outcomes


def run(cfg: PrecomputeConfig) -> Path:
    """Write the label store of ``cfg.dataset``'s train split; a no-op when it is current."""
    from pipeline.cascade import ClassBank
    from stages.data import open_store
    from storage_schema import VARIANTS, create_label_store

    inputs = cfg.inputs()
    cmds = _commands(cfg.dataset)
    for role, path in inputs.items():
        paths.require(path, role.replace("_", " "), cmds[role])
    store = open_store(inputs["data"])
    provenance = _provenance(cfg, inputs, store)
    out = cfg.out_path
    if not cfg.force and _is_current(out, provenance, store.manifest_sha256):
        logger.info("label store %s is up to date; use --force to rebuild", out)
        return out
    ids = [store.ids()[i] for i in store.indices("train")]
    height, width = store.size
    writer = create_label_store(
        out,
        ids=ids,
        variants=VARIANTS,
        classes=list(store.classes),
        height=height,
        width=width,
        dataset_name=store.name,
        manifest_sha256=store.manifest_sha256,
        stat_names=stat_names(VARIANTS),
        shard_size=cfg.shard_size,
        provenance=provenance,
        overwrite=True,
        created=_created(),
    )
    base = ShardJob(
        inputs={k: str(v) for k, v in inputs.items()},
        tmp_path=str(writer.tmp_path),
        start=0,
        stop=0,
        batch_size=cfg.batch_size,
        backend=cfg.search_backend,
        smoothing=cfg.sc_smoothing,
        bank_per_class=cfg.bank_per_class,
        seed=cfg.seed,
        device=cfg.device,
        cache_mb=cfg.cache_mb if cfg.workers == 0 and cfg.scheduler is None else 0,
    )
    try:
        jobs = [_with(base, start=a, stop=b) for a, b in writer.shard_bounds()]
        first = _run_jobs(jobs, cfg, "precompute")
        deferred = [o for o in first if not o.written]
        if deferred:
            banks = {
                b: ClassBank.from_samples([s for o in first for s in o.samples[b]])
                for b in SC_BASES.values()
            }
            logger.info("%d shard(s) need the cross-image bank; finishing them", len(deferred))
            _run_jobs(
                [_with(base, start=o.start, stop=o.stop, banks=banks) for o in deferred],
                cfg,
                "precompute (bank)",
            )
    finally:
        _DEFERRED.clear()
    path = writer.publish()
    logger.info("label store → %s (%d images, %d variants)", path, len(ids), len(VARIANTS))
    return path


def _with(job: ShardJob, **changes) -> ShardJob:
    from dataclasses import replace

    return replace(job, **changes)
