"""distill stage: train a student from the label store (or the live team), then evaluate it."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stages.data import (
    StoreSplit,
    check_same_images,
    epoch_batches,
    foreground_pixels,
    load_split,
    open_labels_with_data,
)
from stages.distill.config import DistillConfig
from stages.locks import holds_output_lock
from stages.records import checkpoint_is_current, config_dict
from stages.train.common import stable_history, write_curve
from stages.train.resume import TrainingState, drop_obsolete_state

logger = logging.getLogger(__name__)


def _val_split(cfg: DistillConfig, store) -> tuple[np.ndarray, np.ndarray | None]:
    """(train, val) positions in the train split: ``--val-fraction`` held out for the curve.

    The held-out images are the teacher's (``pipeline.sampling.validation_indices``: they
    depend on the split's size only); ``--val-fraction 0`` trains on every image (val None).
    """
    n = len(store.indices("train"))
    if cfg.val_fraction == 0:
        return np.arange(n), None
    from pipeline.sampling import validation_indices

    val = validation_indices(n, cfg.val_fraction)
    return np.setdiff1d(np.arange(n), val), val


def _train_subset(cfg: DistillConfig, store, keep: np.ndarray) -> np.ndarray:
    """``keep`` cut to ``--train-fraction`` of it (stratified by empty masks, nested, seeded
    independently of the run's seed: every variant and seed of a fold sees the same images)."""
    if cfg.train_fraction == 1.0:
        return keep
    from pipeline.sampling import fraction_subset

    empty = foreground_pixels(store, store.indices("train")[keep]) == 0
    kept = keep[fraction_subset(empty, cfg.train_fraction)]
    logger.info(
        "--train-fraction %g: %d of %d train images", cfg.train_fraction, len(kept), len(keep)
    )
    return kept


def _plan(cfg: DistillConfig, store, keep: np.ndarray):
    """epoch -> index batches (positions in the train split, drawn from ``keep``), seeded by
    ``cfg.seed`` only; with every position kept, the batches index the split directly."""
    plan = _draws(cfg, store, store.indices("train")[keep])
    if len(keep) == len(store.indices("train")):
        return plan
    return lambda epoch: [keep[b] for b in plan(epoch)]


def _draws(cfg: DistillConfig, store, train_idx: np.ndarray):
    """epoch -> batches of positions in ``train_idx``."""
    n = len(train_idx)
    if cfg.steps_per_epoch == 0:  # one shuffled pass over the split per epoch

        def one_pass(epoch: int) -> list[np.ndarray]:
            batches = epoch_batches(n, cfg.batch_size, epoch, cfg.seed, drop_last=True)
            return [b.numpy() for b in batches]

        return one_pass
    from pipeline.sampling import block_batches, foreground_weights_from_counts, step_batches

    if cfg.shuffle == "block":  # uniform draws (config.problems), read window by window

        def blocks(epoch: int) -> list[np.ndarray]:
            return block_batches(n, cfg.batch_size, cfg.steps_per_epoch, epoch, cfg.seed,
                                 cfg.shuffle_block, cfg.shuffle_window)  # fmt: skip

        return blocks
    counts = foreground_pixels(store, train_idx)
    weights = foreground_weights_from_counts(counts, cfg.foreground_fraction)

    def steps(epoch: int) -> list[np.ndarray]:
        return step_batches(n, cfg.batch_size, cfg.steps_per_epoch, epoch, cfg.seed, weights)

    return steps


def _split_mb(store, label_store, n: int) -> float:
    """MB of ``n`` train images, their masks and (with ``label_store``) one variant's codes."""
    h, w = store.size
    per_image = h * w * 4 + (len(label_store.classes) * h * w if label_store is not None else 0)
    return n * per_image / 2**20


def _stream(cfg: DistillConfig, store, label_store, keep, device: torch.device, live=None):
    """The student's batches: a DataLoader over the stores, decoded and augmented on ``device``."""
    from pipeline.augment import AugmentConfig
    from stages.distill.loader import StoreSource, StudentStream, make_loader

    train_idx = store.indices("train")
    stored = cfg.reads_labels and live is None
    if stored:
        check_same_images(store, label_store, train_idx)
    source = StoreSource(
        data=str(store.path),
        indices=train_idx,
        labels=str(label_store.path) if stored else None,
        variant=cfg.variant if stored else None,
        manifest_sha256=store.manifest_sha256,
        preload=_split_mb(store, label_store if stored else None, len(train_idx)) <= cfg.preload_mb,
    )
    window = cfg.shuffle_block * cfg.shuffle_window
    loader = make_loader(
        source,
        _plan(cfg, store, keep),
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        group=max(1, window // cfg.batch_size) if cfg.shuffle == "block" else 1,
    )
    augment = AugmentConfig() if cfg.augment else None
    return StudentStream(loader, device, cfg.seed, augment, live)


def _step(cfg: DistillConfig, teacher=None, student_taps: tuple[str, ...] = ()):
    """(net, batch) -> loss terms: L_Seg, the stored-label term on batch[2] when there is
    one, and with a teacher loss its term on the live ``teacher``'s taps (``net`` is then a
    :class:`~stages.distill.teacher_kd.Distiller`)."""
    from pipeline.check import class_argmax
    from pipeline.kd_table import get_loss
    from pipeline.losses import cwd_loss, dist_loss, dkd_loss, kd_loss, masked_kd_loss, seg_loss

    row = get_loss(cfg.loss)
    weight = row.weight if cfg.kd_weight is None else cfg.kd_weight
    # the term's name as an interned str: a resumed run's history keys are interned, and
    # pickle writes a str shared with the config once, so a plain one would change the bytes
    name = sys.intern(cfg.loss)

    def response(logits: torch.Tensor, target: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        if cfg.loss == "dkd":
            return dkd_loss(logits, soft, target, cfg.tau, cfg.dkd_alpha, cfg.dkd_beta)
        if cfg.loss == "dist":
            return dist_loss(logits, soft, cfg.tau, cfg.dist_beta, cfg.dist_gamma)
        if cfg.loss == "cwd":
            return cwd_loss(logits, soft, cfg.tau)
        return kd_loss(logits, soft, cfg.tau)  # kd, and the KD of --plus-kd

    def step(net: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        if teacher is None:
            logits = net(batch[0])
        else:  # one no-grad teacher forward feeds every tap
            logits, maps = net.student.forward_taps(batch[0], student_taps)
            terms[name] = net.kd((logits, [maps[t] for t in student_taps]), teacher(batch[0]),
                                 batch[1])  # fmt: skip
        seg = seg_loss(logits, batch[1])
        loss = seg if teacher is None else seg + weight * terms[name]
        if len(batch) == 3:  # the stored labels: the loss, or the KD of --plus-kd
            if cfg.kd_pixels == "correct":  # KD only where the label's argmax is the GT
                mask = class_argmax(batch[2], 1) == batch[1]
                kd = masked_kd_loss(logits, batch[2], mask, cfg.tau)
            else:
                kd = response(logits, batch[1], batch[2])
            terms["kd" if teacher is not None else name] = kd
            loss = loss + cfg.lam * kd
        return {"loss": loss, "seg": seg, **terms}

    return step


@holds_output_lock("plc distill", lambda cfg: Path(cfg.out))  # one writer per output
def run(cfg: DistillConfig) -> Path:
    """Train and evaluate one student; returns the ``metrics.json`` path."""
    from pipeline.checkpoint import save_checkpoint
    from pipeline.models.registry import build_model, check_input_size
    from pipeline.train import fit, resolve_device, seed_everything
    from stages.evaluate import evaluate_model, write_metrics
    from stages.train.checks import check_training
    from stages.train.common import make_train_config, val_dice

    out = Path(cfg.out)
    if (
        checkpoint_is_current(out / "student.pt", cfg, cfg.force)
        and (out / "metrics.json").exists()
    ):
        logger.info("student %s is up to date (same config); use --force to retrain", out)
        drop_obsolete_state(out)
        return out / "metrics.json"
    store, label_store = open_labels_with_data(cfg.labels, cfg.data, cfg.fold)
    height, width = store.size
    check_input_size(cfg.student, height, width)
    device = resolve_device(cfg.device)
    keep, val = _val_split(cfg, store)
    keep = _train_subset(cfg, store, keep)
    live = _live_labels(cfg, store, label_store, device) if cfg.live else None
    stream = _stream(cfg, store, label_store, keep, device, live)
    seed_everything(cfg.seed)
    n_classes = len(store.classes)
    student = build_model(cfg.student, num_classes=n_classes, img_size=height).to(device)
    pairing = _pairing(cfg, store, student, keep)  # the student's own initial weights
    model, teacher, taps = student, None, ()
    if cfg.live_loss:  # the loss's parts are built after the student: its init is unchanged
        model, teacher, taps = _teacher_loss(
            cfg, label_store, student, n_classes, (height, width), device
        )
    with TrainingState(
        out,  # <run folder>.train-state: beside the folder, which is written only at the end
        {
            "options": config_dict(cfg),
            "inputs": {
                "manifest_sha256": store.manifest_sha256,
                "labels_provenance_sha256": _provenance_sha256(label_store),
                **pairing,  # the paired design: same initial weights, same batch plan
                **({"teacher_sha256": teacher.sha256} if teacher is not None else {}),
            },
        },
        resume=cfg.resume,
        command="plc distill",
    ) as state:
        evaluate = None
        if val is not None:  # val Dice per epoch on held-out train images (never the test split)
            evaluate = val_dice(StoreSplit(store, "train", val), n_classes, cfg.batch_size, device)
        history = fit(
            model,
            stream,
            _step(cfg, teacher, taps),
            make_train_config(cfg),
            steps_per_epoch=len(stream),
            evaluate=evaluate,
            desc=f"student ({cfg.variant})",
            state=state,
        )
        stream.close()  # the loader's workers end here, before evaluation
        kd_modules = model.kd if teacher is not None else None
        model = student  # holds the EMA weights fit left in the Distiller
        check = check_training(
            model,
            StoreSplit(store, "train", keep),
            store.classes,
            f"student {cfg.student} ({cfg.variant}, seed {cfg.seed})",
            batch_size=cfg.batch_size,
            device=device,
            allow_weak=cfg.allow_weak_teacher,
        )
        out.mkdir(parents=True, exist_ok=True)
        meta = {"stage": config_dict(cfg), "manifest_sha256": store.manifest_sha256}
        save_checkpoint(
            out / "student.pt",
            model.cpu(),
            model_name=cfg.student,
            num_classes=n_classes,
            img_size=height,
            config=meta,
            extra={"history": stable_history(history), "role": "student", "train_check": check},
        )
        write_curve(history, out / "curve.csv")
        if kd_modules is not None:  # the connector, head, memory: apart from the student
            from stages.distill.teacher_kd import KD_MODULES, save_kd_modules

            meta = {"loss": cfg.loss, **_teacher_record(teacher, taps)}
            save_kd_modules(out / KD_MODULES, kd_modules, meta)
        metrics = evaluate_model(
            model.to(device), StoreSplit(store, "test"), n_classes, cfg.batch_size, device, True
        )
        extra = {
            "config": config_dict(cfg),
            "dataset": store.name,
            "split": "test",
            "train_check": check,
            **pairing,
            **_teacher_record(teacher, taps),
        }
        logger.info("student %s: test Dice %.4f IoU %.4f", out, metrics["dice"], metrics["iou"])
        written = write_metrics(metrics, out / "metrics.json", extra)
        state.finish()  # published: the training state is no longer needed
        return written


def _provenance_sha256(label_store) -> str | None:
    """SHA-256 of the label store's provenance (which team, which run), None without one."""
    if label_store is None:
        return None
    import hashlib
    import json

    text = json.dumps(label_store.provenance, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _pairing(cfg: DistillConfig, store, model: nn.Module, keep: np.ndarray) -> dict[str, str]:
    """Digests of the initial weights and the batch plan (the paired design, checked by
    ``plc report``): equal for every variant of one (fold, seed)."""
    from stages.distill.pairing import plan_sha256, weights_sha256

    plan = _plan(cfg, store, keep)
    return {"init_sha256": weights_sha256(model), "batches_sha256": plan_sha256(plan, cfg.epochs)}


def _live_labels(cfg: DistillConfig, store, label_store, device: torch.device):
    """The team's labels computed every step (``--live``; holds the train split in memory)."""
    from stages.distill.live import LiveLabels

    train = load_split(store, "train")
    return LiveLabels(label_store, cfg.variant, train, device)


def _teacher_loss(cfg: DistillConfig, label_store, student: nn.Module, classes: int, size, device):
    """(Distiller, live teacher, student taps) for a teacher loss (``--loss`` at, fitnet ...)."""
    from pipeline.kd_table import get_loss
    from stages.distill.teacher_kd import (
        build_distiller,
        load_teacher,
        resolve_taps,
        teacher_path,
    )

    row = get_loss(cfg.loss)
    teacher = load_teacher(
        teacher_path(cfg.teacher, label_store), cfg.teacher_taps, row.taps, device
    )
    if getattr(teacher.net, "num_classes", classes) != classes:
        raise ValueError(
            f"the teacher {teacher.path} segments {teacher.net.num_classes} classes, the dataset "
            f"{classes}: pass --teacher with a teacher of this dataset."
        )
    taps = resolve_taps(cfg.taps, student, row.taps, "student")
    distiller = build_distiller(row, student, taps, teacher, classes, size, device)
    return distiller, teacher, taps


def _teacher_record(teacher, taps: tuple[str, ...]) -> dict:
    """What metrics.json records of a live teacher: its file, SHA-256 and both taps."""
    if teacher is None:
        return {}
    return {"teacher": {"path": str(teacher.path), "sha256": teacher.sha256,
                        "taps": list(teacher.taps), "student_taps": list(taps)}}  # fmt: skip
