"""precompute stage: run the teacher team ONCE over the train split → the label store.

Two passes over shards (a shard is the unit of writing, so each task owns whole shards):

1. every pending shard is scanned (forwards, cascade, bank samples) and, unless one of its
   images has a GT class with no correct pixel left in that image (SC then needs the
   cross-image bank), finished and written at once;
2. the banks are assembled in image order and the deferred shards are finished with them
   (from pass-1 outputs the caller held, within ``--cache-mb``; otherwise recomputed).

``--resume`` continues an interrupted ``<out>.writing`` store: only its pending shards are
computed; the done ones contribute the bank samples they saved.

The result depends only on the inputs and the seed, never on how shards were scheduled, so an
in-process run and a Dask run write the same bytes.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from pipeline.variants import NAMES, sc_bases
from stages import paths
from stages.locks import holds_output_lock
from stages.precompute.config import PrecomputeConfig
from stages.precompute.shard import (
    LocalRunner,
    ShardJob,
    ShardOutcome,
    ShardSettings,
    load_samples,
    stat_names,
)
from stages.records import config_dict

logger = logging.getLogger(__name__)


def _commands(ds: str) -> dict[str, str]:
    return {
        "data": f"plc prepare --dataset ... --out {paths.data_path(ds)}",
        "teacher": f"plc train-teacher --dataset {ds}` or `plc import-teacher --dataset {ds} "
        "--probs DIR",
        "assistant_fp": f"plc train-assistant --dataset {ds} --kind false-pixel",
        "assistant_bd": f"plc train-assistant --dataset {ds} --kind boundary",
    }


def _teacher(cfg: PrecomputeConfig, path: Path, store) -> dict:
    """:func:`pipeline.torchscript.teacher_meta` of T plus ``features``; a TorchScript teacher
    is loaded and its contract checked on the first train batch, an imported one checked
    against the store (manifest, classes, size, every train image), a checkpoint only read.
    ``--sc-features`` is refused with a teacher that gives features (it would be ignored)."""
    from pipeline.imported import ImportedTeacher
    from pipeline.torchscript import load_teacher, teacher_meta
    from pipeline.train import resolve_device
    from stages.data import first_images
    from stages.import_teacher.use import check_fits

    meta = teacher_meta(path)
    if meta["teacher_kind"] == "checkpoint":
        meta = meta | {"features": True}  # every registry network has forward_features
    else:
        images = first_images(store, "train", cfg.batch_size, resolve_device(cfg.device))
        model, meta = load_teacher(path, images, len(store.classes))
        if isinstance(model, ImportedTeacher):
            check_fits(model, store, cfg.dataset)
    if cfg.sc_features is not None and meta["features"]:
        raise ValueError(
            f"--sc-features {cfg.sc_features} chooses an assistant's features for a teacher "
            f"without any, but the teacher {path} gives its own (SC reads them); drop "
            "--sc-features."
        )
    return meta


def _provenance(cfg: PrecomputeConfig, inputs: dict[str, Path], store, teacher: dict) -> dict:
    """What the store records about its making; ``teacher``: :func:`_teacher`'s record."""
    from importlib.metadata import version

    from pipeline.checkpoint import file_sha256, load_checkpoint
    from pipeline.torchscript import teacher_sha256
    from stages.precompute.team import sc_feature_source

    nets = {}
    for role in ("teacher", "assistant_fp", "assistant_bd"):
        meta = teacher if role == "teacher" else load_checkpoint(inputs[role])
        digest = teacher_sha256 if role == "teacher" else file_sha256  # an import's digest
        nets[role] = {
            "path": str(inputs[role]),
            "sha256": digest(inputs[role]),
            "init_sha256": meta["config"].get("init_sha256"),  # --init file of that network
            "model_name": meta["model_name"],  # None for a TorchScript or imported teacher
            "config": meta["config"],  # an imported teacher's: {"import": its summary}
        }
    return {
        "dataset_path": str(inputs["data"]),
        "dataset_name": store.name,
        "split": "train",
        "fold": cfg.fold,  # None: the stored split; F: the train images of fold F's view
        "networks": nets,
        "teacher_kind": teacher["teacher_kind"],  # "checkpoint", "torchscript" or "imported"
        # whose map SC searched: "teacher", or an assistant's (--sc-features)
        "sc_features": sc_feature_source(teacher["features"], cfg.sc_features),
        "precompute": config_dict(cfg),
        "package": {"plc-kd": version("plc-kd"), "torch": torch.__version__},
    }


def _calibrate(cfg: PrecomputeConfig, inputs: dict[str, Path], teacher: dict) -> dict:
    """The assistants' temperatures for ``plc_cal``, fitted by NLL on the teacher's held-out
    train images (its ``--val-fraction``), or on the whole train split when it held none out
    or is a TorchScript file or an imported teacher, which record none (the record says
    which)."""
    from pipeline.sampling import validation_indices
    from pipeline.train import resolve_device
    from stages.data import StoreSplit, open_store
    from stages.precompute.team import Team, fit_temperatures

    store = open_store(inputs["data"], cfg.fold)
    n = len(store.indices("train"))
    stage = teacher["config"].get("stage", {})
    fraction = float(stage.get("val_fraction", 0.0) or 0.0)
    if fraction > 0 and n >= 2:
        positions, source = validation_indices(n, fraction), "teacher val images"
    else:
        why = {"torchscript": "a TorchScript teacher records none",
               "imported": "an imported teacher records none"}.get(
            teacher["teacher_kind"], "the teacher held none out")  # fmt: skip
        positions, source = np.arange(n), f"train split ({why})"
    split = StoreSplit(store, "train", positions)  # only those images are read
    nets = [inputs[r] for r in ("teacher", "assistant_fp", "assistant_bd")]
    team = Team.load(*nets, device=resolve_device(cfg.device))
    try:
        cal = fit_temperatures(team, split, np.arange(len(split)), cfg.batch_size, source)
    finally:
        team.close()
    logger.info("plc_cal temperatures (NLL on %d %s): TA_f %.3f, TA_b %.3f",
                cal["images"], source, cal["fp"], cal["bd"])  # fmt: skip
    return cal


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


def _open_writer(cfg: PrecomputeConfig, store, provenance: dict):
    """A writer on ``<out>.writing``: a fresh one, or the interrupted one with ``--resume``."""
    from storage_schema import create_label_store
    from storage_schema._common import writing_path

    out = cfg.out_path
    if cfg.resume and not writing_path(out).exists():
        raise FileNotFoundError(
            f"--resume: there is no interrupted run to continue ({writing_path(out)} does not "
            "exist); run without --resume."
        )
    height, width = store.size
    return create_label_store(
        out,
        ids=[store.ids()[i] for i in store.indices("train")],
        variants=NAMES,
        classes=list(store.classes),
        height=height,
        width=width,
        dataset_name=store.name,
        manifest_sha256=store.manifest_sha256,
        stat_names=stat_names(NAMES),
        shard_size=cfg.shard_size,
        chunk_images=cfg.chunk_images,
        provenance=provenance,
        resume=cfg.resume,
        overwrite=True,
        created=_created(),
    )


def _runner(cfg: PrecomputeConfig, inputs: dict[str, str], key: str):
    """In-process (one worker object), or Dask (one per worker, via a WorkerPlugin)."""
    if cfg.workers == 0 and cfg.scheduler is None:
        return LocalRunner(inputs, key, cfg.device, cfg.cache_mb)
    from stages.precompute.dask_run import DaskRunner, WorkerState

    state = WorkerState(inputs, key, cfg.device)
    return DaskRunner(state, cfg.workers, cfg.scheduler, cfg.gpu, cfg.task_timeout)


def _banks(first: list[ShardOutcome], writer, runner, settings: ShardSettings, track) -> dict:
    """The cross-image banks from every shard's samples, in image order.

    Shards finished by an interrupted run contribute the samples it saved; the rare shard
    without them is scanned again (samples only).
    """
    from pipeline.cascade import ClassBank

    by_start = {o.start: o.samples for o in first}
    missing = []
    for a, b in writer.shard_bounds():
        if a not in by_start:
            by_start[a] = load_samples(str(writer.tmp_path), a)
            if by_start[a] is None:
                missing.append(ShardJob(a, b, settings, samples_only=True))
    for o in runner.run(missing, track("precompute (bank samples)")):
        by_start[o.start] = o.samples
    starts = sorted(by_start)
    return {
        base: ClassBank.from_samples([s for a in starts for s in by_start[a][base]])
        for base in sc_bases()
    }


@holds_output_lock("plc precompute", lambda cfg: cfg.out_path)  # one writer per output
def run(cfg: PrecomputeConfig) -> Path:
    """Write the label store of ``cfg.dataset``'s train split; a no-op when it is current."""
    from stages.data import open_store
    from stages.precompute.team import team_key
    from stages.progress import track

    inputs = cfg.inputs()
    cmds = _commands(cfg.dataset)
    for role, path in inputs.items():
        paths.require(path, role.replace("_", " "), cmds[role])
    store = open_store(inputs["data"], cfg.fold)
    teacher = _teacher(cfg, inputs["teacher"], store)  # TorchScript, imported: checked first
    provenance = _provenance(cfg, inputs, store, teacher)
    out = cfg.out_path
    if not cfg.force and not cfg.resume and _is_current(out, provenance, store.manifest_sha256):
        logger.info("label store %s is up to date; use --force to rebuild", out)
        return out
    provenance["calibration"] = _calibrate(cfg, inputs, teacher)
    writer = _open_writer(cfg, store, provenance)
    pending = writer.pending_shards()
    logger.info(
        "precompute: %d of %d shard(s) to compute", len(pending), len(writer.shard_bounds())
    )
    settings = ShardSettings(
        tmp_path=str(writer.tmp_path),
        batch_size=cfg.batch_size,
        backend=cfg.search_backend,
        smoothing=cfg.sc_smoothing,
        gt_smoothing=cfg.gt_smoothing,
        bank_per_class=cfg.bank_per_class,
        seed=cfg.seed,
        knn_k=cfg.sc_knn_k,
        confident_quantile=cfg.sc_confident_quantile,
    )
    key = team_key(inputs["teacher"], inputs["assistant_fp"], inputs["assistant_bd"])

    def bar(desc: str):
        return lambda items, total: track(items, desc, total, cfg.progress)

    fold = {} if cfg.fold is None else {"fold": str(cfg.fold)}  # the workers' split view
    cal = provenance["calibration"]
    temps = {"temperatures": json.dumps({"fp": cal["fp"], "bd": cal["bd"]})}
    sc = {} if cfg.sc_features is None else {"sc_features": cfg.sc_features}
    worker_inputs = {k: str(v) for k, v in inputs.items()} | fold | temps | sc
    with _runner(cfg, worker_inputs, key) as runner:
        first = runner.run([ShardJob(a, b, settings) for a, b in pending], bar("precompute"))
        deferred = [o for o in first if not o.written]
        if deferred:
            banks = _banks(first, writer, runner, settings, bar)
            logger.info("%d shard(s) need the cross-image bank; finishing them", len(deferred))
            jobs = [ShardJob(o.start, o.stop, settings, banks, o.held) for o in deferred]
            del first, deferred  # the held scans live on in the jobs only
            runner.run(jobs, bar("precompute (bank)"))
    path = writer.publish()
    logger.info("label store → %s (%d images, %d variants)", path, len(writer.ids), len(NAMES))
    return path
