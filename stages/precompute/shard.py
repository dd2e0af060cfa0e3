"""One precompute task: a shard of the train split through the team, the cascade, SC, stats.

A shard is the unit of writing of the label store, so each task owns whole shards. A task
first *scans* its shard (team forwards and the cascade before SC, bank samples, and whether
SC needs the cross-image bank), then *finishes* it (SC, controls, stats, encode, write)
unless it needs the bank and the banks are not complete yet (pass 1); the caller then runs
it again with the banks (pass 2), handing back the scanned batches it held, if any. No SC
result is ever computed and thrown away.

State is explicit: a :class:`PrecomputeWorker` holds the team and the train split, built
once per process (in-process runs) or once per Dask worker (``stages.precompute.dask_run.WorkerState``,
a ``distributed.WorkerPlugin``) and freed at the end. The methods themselves are those of
:mod:`pipeline.cascade`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pipeline.variants import NAMES, VARIANTS, sc_bases

if TYPE_CHECKING:
    from pipeline.cascade import Cascade, ClassBank
    from stages.data import SplitData
    from stages.precompute.team import Team
    from stages.precompute.writeback import WriteQueue

logger = logging.getLogger(__name__)

SC_KINDS = ("in_image", "bank", "onehot")


def stat_names(variants: tuple[str, ...] = NAMES) -> list[str]:
    """Per-image stats stored beside the soft labels, derived from the variant table."""
    sc_rows = [v.name for v in VARIANTS if v.sc and v.name in variants]
    names = [f"false_pixels_{v}" for v in variants] + [f"dice_{v}" for v in variants]
    return names + [f"sc_{kind}_{v}" for v in sc_rows for kind in SC_KINDS]


@dataclass(frozen=True)
class ShardSettings:
    """What every shard task of one run shares; picklable for Dask workers."""

    tmp_path: str
    batch_size: int
    backend: str
    smoothing: float
    gt_smoothing: float
    bank_per_class: int
    seed: int
    knn_k: int = 8
    confident_quantile: float = 0.5


@dataclass
class Scanned:
    """One batch after the scan: image indices, the cascade before SC, T's features."""

    idx: torch.Tensor
    casc: Cascade
    feats: torch.Tensor

    def nbytes(self) -> int:
        casc = self.casc
        tensors = [*casc.maps.values(), *casc.right.values(), *casc.pred.values(), casc.gt]
        tensors.append(self.feats)
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class ShardJob:
    """One shard task. ``banks`` None: pass 1; ``held``: the scan of pass 1, if kept."""

    start: int
    stop: int
    settings: ShardSettings
    banks: dict[str, ClassBank] | None = None
    held: list[Scanned] | None = None
    hold_bytes: int = 0  # pass 1: return the scan of a deferred shard when it fits this
    samples_only: bool = False  # resume: only the bank samples of a shard already written


@dataclass
class ShardOutcome:
    start: int
    stop: int
    written: bool
    samples: dict[str, list] = field(default_factory=dict)  # SC base -> per-image samples
    held: list[Scanned] | None = None  # pass 1 of a deferred shard, when it fit hold_bytes


def bank_samples(
    casc: Cascade,
    feats: torch.Tensor,
    idx: torch.Tensor,
    per_class: int,
    seed: int,
    bases: tuple[str, ...] | None = None,
) -> dict[str, list]:
    """Seeded per-image samples of correct pixels for the bank of every SC base.

    The generator of image ``j`` depends only on (seed, j): the bank never depends on
    scheduling.
    """
    from pipeline.sc import sample_batch

    gt, feats_cpu = casc.gt.cpu(), feats.cpu()
    samples: dict[str, list] = {}
    for base in sc_bases() if bases is None else bases:
        generators = [torch.Generator().manual_seed(seed * 1_000_003 + j) for j in idx.tolist()]
        samples[base] = sample_batch(
            casc.maps[base].cpu(), feats_cpu, gt, per_class, generators,
            casc.right[base].cpu(),
        )  # fmt: skip
    return samples


RANDOM_STREAM = 2**40  # offset of the random rule's per-image seeds from the bank's


def random_seeds(seed: int, idx: torch.Tensor) -> list[int]:
    """Per-image seeds of the ``random`` rule: a function of (seed, image index) only, so a
    row never depends on batching, sharding or scheduling."""
    return [seed * 1_000_003 + j + RANDOM_STREAM for j in idx.tolist()]


def batch_stats(
    maps: dict[str, torch.Tensor], casc: Cascade, counts: dict[str, dict[str, torch.Tensor]]
) -> dict[str, np.ndarray]:
    """Per-image false pixels and Dice of every variant, and the SC counts, as float64."""
    from pipeline.metrics import dice_iou

    gt = casc.gt.cpu()
    stats = {}
    all_right: np.ndarray | None = None  # the Dice of gt against itself, computed once
    for name, p in maps.items():
        right = casc.right.get(name)  # None: SC rows and controls, all-correct by construction
        if right is None:
            if all_right is None:
                all_right = dice_iou(gt, gt, p.shape[1])[0].double().numpy()
            stats[f"false_pixels_{name}"] = np.zeros(len(gt))
            stats[f"dice_{name}"] = all_right
            continue
        pred = casc.pred[name].cpu()
        stats[f"false_pixels_{name}"] = (~right).flatten(1).sum(1).cpu().double().numpy()
        stats[f"dice_{name}"] = dice_iou(pred, gt, p.shape[1])[0].double().numpy()
    for name, per_kind in counts.items():
        for kind in SC_KINDS:
            stats[f"sc_{kind}_{name}"] = per_kind[f"sc_{kind}"].double().numpy()
    return stats


def _save_samples(job: ShardJob, samples: dict[str, list]) -> None:
    from storage_schema import LabelStoreWriter

    writer = LabelStoreWriter.open(job.settings.tmp_path)
    writer.save_scratch(f"bank-{job.start}", pack_samples(samples))


def load_samples(tmp_path: str, start: int) -> dict[str, list] | None:
    """The bank samples pass 1 saved for the shard at ``start``, or None."""
    from storage_schema import LabelStoreWriter

    arrays = LabelStoreWriter.open(tmp_path).load_scratch(f"bank-{start}")
    return None if arrays is None else unpack_samples(arrays)


def _encode_batch(maps: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """int8 codes (B, C, H, W) of each map (runs on the write queue's thread)."""
    from storage_schema import encode_logprobs

    return {
        v: encode_logprobs(torch.log(p.clamp_min(1e-12)).cpu().numpy(), axis=1)
        for v, p in maps.items()
    }


class PrecomputeWorker:
    """The team and the train split of one run, on one device; runs shard tasks."""

    def __init__(self, team: Team, train: SplitData, key: str) -> None:
        self.team, self.train, self.key = team, train, key

    @classmethod
    def load(cls, inputs: dict[str, str], key: str, device: str) -> PrecomputeWorker:
        """Load the team and the train split; refuse checkpoints whose content is not ``key``."""
        from pipeline.train import resolve_device
        from stages.data import load_split, open_store
        from stages.precompute.team import Team, team_key

        nets = [Path(inputs[r]) for r in ("teacher", "assistant_fp", "assistant_bd")]
        found = team_key(*nets)
        if found != key:
            raise ValueError(
                f"the team checkpoints {', '.join(map(str, nets))} changed while precompute "
                "was running (their SHA-256 differ from the run's); rerun `plc precompute`."
            )
        temps = json.loads(inputs["temperatures"]) if "temperatures" in inputs else None
        team = Team.load(*nets, device=resolve_device(device), temperatures=temps,
                         sc_features=inputs.get("sc_features"))  # fmt: skip
        fold = int(inputs["fold"]) if "fold" in inputs else None  # precompute --fold
        return cls(team, load_split(open_store(Path(inputs["data"]), fold), "train"), key)

    def close(self) -> None:
        """Free the team and the split."""
        self.team.close()
        self.train = None  # type: ignore[assignment]

    def scan(self, job: ShardJob) -> list[Scanned]:
        """Team forwards and the cascade before SC, batch by batch."""
        from pipeline.cascade import cascade

        out = []
        for lo in range(job.start, job.stop, job.settings.batch_size):
            idx = torch.arange(lo, min(lo + job.settings.batch_size, job.stop))
            images, gt = self.train.batch(idx, self.team.device)
            team = self.team(images, [self.train.ids[i] for i in idx.tolist()])
            out.append(Scanned(idx, cascade(team.p_t, team.assistants, gt), team.feats))
        return out

    def run(self, job: ShardJob, queue: WriteQueue | None = None) -> ShardOutcome:
        """Scan the shard, then finish it unless it needs banks it does not have yet.

        Encoding and writing run on ``queue`` (the caller's, shared across shards), or on a
        queue of this task's own that is drained before returning.
        """
        from stages.precompute.writeback import WriteQueue

        if queue is None:
            with WriteQueue() as own:
                return self.run(job, own)
        outcome = ShardOutcome(job.start, job.stop, written=False)
        scanned = job.held if job.held is not None else self.scan(job)
        if job.banks is None:
            outcome.samples = {b: [] for b in sc_bases()}
            for s in scanned:
                batch = bank_samples(
                    s.casc, s.feats, s.idx, job.settings.bank_per_class, job.settings.seed
                )
                for base, samples in batch.items():
                    outcome.samples[base].extend(samples)
            _save_samples(job, outcome.samples)  # a resumed run reads them for the bank
            if job.samples_only:
                return outcome
            if any(bool(s.casc.needs_bank(b).any()) for s in scanned for b in sc_bases()):
                if sum(s.nbytes() for s in scanned) <= job.hold_bytes:
                    outcome.held = scanned
                return outcome  # pass 2 finishes it with the complete banks
        self.finish(job, scanned, queue)
        outcome.written = True
        return outcome

    def finish(self, job: ShardJob, scanned: list[Scanned], queue: WriteQueue) -> None:
        """SC, controls and stats per batch; encode and write the shard (on ``queue``)."""
        from pipeline.cascade import SCConfig, finish
        from storage_schema import LabelStoreWriter

        st = job.settings
        cfg = SCConfig(backend=st.backend, smoothing=st.smoothing, knn_k=st.knn_k,
                       confident_quantile=st.confident_quantile)  # fmt: skip
        device = self.team.device
        banks = {b: bank.to(device) for b, bank in (job.banks or {}).items()}  # moved once
        codes: list[dict[str, np.ndarray]] = []
        stats: list[dict[str, np.ndarray]] = []
        for s in scanned:
            maps, counts = finish(
                s.casc, s.feats, cfg, banks, gt_smoothing=st.gt_smoothing,
                seeds=random_seeds(st.seed, s.idx),
            )  # fmt: skip
            stats.append(batch_stats(maps, s.casc, counts))
            queue.submit(lambda maps=maps: codes.append(_encode_batch(maps)))

        def write() -> None:
            writer = LabelStoreWriter.open(job.settings.tmp_path)
            writer.write_shard(
                job.start,
                {v: np.concatenate([c[v] for c in codes]) for v in NAMES},
                {k: np.concatenate([s[k] for s in stats]) for k in stats[0]},
            )

        queue.submit(write)


def pack_samples(samples: dict[str, list]) -> dict[str, np.ndarray]:
    """Bank samples of a shard as flat named arrays (see :func:`unpack_samples`)."""
    out: dict[str, np.ndarray] = {}
    for base, per_image in samples.items():
        out[f"{base}.n"] = np.asarray(len(per_image))
        for i, sample in enumerate(per_image):
            for c, (f, s) in sample.items():
                out[f"{base}.{i}.{c}.f"] = f.numpy()
                out[f"{base}.{i}.{c}.s"] = s.numpy()
    return out


def unpack_samples(arrays: dict[str, np.ndarray]) -> dict[str, list]:
    """Inverse of :func:`pack_samples`; classes in ascending order, as sampled."""
    out: dict[str, list] = {}
    for base in sc_bases():
        n = int(arrays[f"{base}.n"])
        out[base] = [{} for _ in range(n)]
        keys = sorted(
            (int(i), int(c))
            for b, i, c, kind in (k.split(".") for k in arrays if k.count(".") == 3)
            if b == base and kind == "f"
        )
        for i, c in keys:
            f, s = arrays[f"{base}.{i}.{c}.f"], arrays[f"{base}.{i}.{c}.s"]
            out[base][i][c] = (torch.from_numpy(f), torch.from_numpy(s))
    return out


class LocalRunner:
    """Shard tasks in this process: one :class:`PrecomputeWorker` and one write queue.

    Use as a context manager; leaving drains the write queue (raising a failed write) and
    frees the team. Pass-1 outputs of deferred shards are handed back to the caller while
    they fit ``cache_mb``.
    """

    def __init__(self, inputs: dict[str, str], key: str, device: str, cache_mb: int) -> None:
        self.inputs, self.key, self.device = inputs, key, device
        self.budget = cache_mb * 2**20

    def __enter__(self) -> LocalRunner:
        from stages.precompute.writeback import WriteQueue

        self.worker = PrecomputeWorker.load(self.inputs, self.key, self.device)
        self.queue = WriteQueue()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.queue.close()
            else:
                self.queue.__exit__(*exc)  # type: ignore[arg-type]
        finally:
            self.worker.close()

    def run(self, jobs: list[ShardJob], track) -> list[ShardOutcome]:
        """Run ``jobs`` in order; outcomes in job order."""
        from dataclasses import replace

        outcomes = []
        for job in track(iter(jobs), len(jobs)):
            outcome = self.worker.run(replace(job, hold_bytes=self.budget), self.queue)
            if outcome.held is not None:
                self.budget -= sum(s.nbytes() for s in outcome.held)
            outcomes.append(outcome)
        return outcomes
