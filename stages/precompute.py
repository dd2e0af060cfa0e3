"""precompute stage: run the teacher team ONCE over the train split → the label store.

Two passes over shards (a shard is the unit of writing, so each task owns whole shards):

1. every shard is computed; a shard is written at once unless one of its images has a GT class
   with no correct pixel left in that image (SC then needs the cross-image bank). Each image also
   contributes a seeded sample of its correct pixels to the per-class banks;
2. the banks are assembled in image order and the deferred shards are finished with them
   (from pass-1 team outputs kept in memory in-process; a Dask worker recomputes them).

The result depends only on the inputs and the seed, never on how shards were scheduled, so an
in-process run and a Dask run write the same bytes.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import torch

from stages import paths, shard
from stages.common import config_dict
from stages.configs import PrecomputeConfig
from stages.shard import SC_BASES, ShardJob, ShardOutcome, stat_names

logger = logging.getLogger(__name__)


def _commands(ds: str) -> dict[str, str]:
    return {
        "data": f"plc prepare --dataset ... --out {paths.data_path(ds)}",
        "teacher": f"plc train-teacher --dataset {ds}",
        "assistant_fp": f"plc train-assistant --dataset {ds} --kind false-pixel",
        "assistant_bd": f"plc train-assistant --dataset {ds} --kind boundary",
    }


def _provenance(cfg: PrecomputeConfig, inputs: dict[str, Path], store) -> dict:
    from importlib.metadata import version

    from pipeline.checkpoint import file_sha256, load_checkpoint

    nets = {}
    for role in ("teacher", "assistant_fp", "assistant_bd"):
        meta = load_checkpoint(inputs[role])
        nets[role] = {
            "path": str(inputs[role]),
            "sha256": file_sha256(inputs[role]),
            "init_sha256": meta["config"].get("init_sha256"),  # --init file of that network
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
        return list(track((shard.process_shard(j) for j in jobs), desc, len(jobs), cfg.progress))
    from distributed import Client, LocalCluster, as_completed

    cluster = (
        None
        if cfg.scheduler
        else LocalCluster(
            n_workers=cfg.workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
    )
    with Client(cfg.scheduler or cluster) as client:
        futures = client.map(shard.process_shard, jobs, pure=False)
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
        shard.clear_deferred()
    path = writer.publish()
    logger.info("label store → %s (%d images, %d variants)", path, len(ids), len(VARIANTS))
    return path


def _with(job: ShardJob, **changes) -> ShardJob:
    from dataclasses import replace

    return replace(job, **changes)
