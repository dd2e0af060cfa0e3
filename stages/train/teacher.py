"""train_teacher stage: the teacher T, trained on the train split with L_Seg."""

from __future__ import annotations

import logging
from pathlib import Path

from stages.data import load_split, open_store
from stages.locks import holds_output_lock
from stages.records import checkpoint_is_current, config_dict, init_sha256
from stages.train.common import (
    augmentation,
    make_train_config,
    split_validation,
    stable_history,
    train_segmenter,
    write_curve,
)
from stages.train.config import TeacherConfig
from stages.train.resume import TrainingState, drop_obsolete_state

logger = logging.getLogger(__name__)


@holds_output_lock("plc train-teacher", lambda cfg: cfg.out_path)  # one writer per output
def run(cfg: TeacherConfig) -> Path:
    """Train the teacher; a no-op when the checkpoint exists with the same config."""
    from pipeline.checkpoint import save_checkpoint
    from pipeline.models.pretrained import load_init
    from pipeline.models.registry import build_model, check_input_size
    from pipeline.train import resolve_device, seed_everything
    from stages.evaluate import evaluate_model, write_metrics
    from stages.train.checks import check_training

    out = cfg.out_path
    init_sha = init_sha256(cfg.init)
    if checkpoint_is_current(out, cfg, cfg.force, init_sha):
        logger.info("teacher %s is up to date (same config); use --force to retrain", out)
        drop_obsolete_state(out)
        return out
    store = open_store(cfg.data_path, cfg.fold)
    with TrainingState(
        out,
        {
            "options": config_dict(cfg),
            "inputs": {"manifest_sha256": store.manifest_sha256, "init_sha256": init_sha},
        },
        resume=cfg.resume,
        command="plc train-teacher",
    ) as state:
        height, width = store.size
        check_input_size(cfg.model, height, width)
        seed_everything(cfg.seed)
        model = build_model(cfg.model, num_classes=len(store.classes), img_size=height)
        if cfg.init is not None:
            load_init(model, cfg.init)
        train, val = split_validation(load_split(store, "train"), cfg.val_fraction)
        history = train_segmenter(
            model,
            train,
            train_cfg=make_train_config(cfg),
            batch_size=cfg.batch_size,
            transform=augmentation(cfg.augment),
            desc="teacher",
            steps_per_epoch=cfg.steps_per_epoch,
            foreground_fraction=cfg.foreground_fraction,
            val=val,
            num_classes=len(store.classes),
            state=state,
        )
        device = resolve_device(cfg.device)
        check = check_training(
            model,
            train,
            store.classes,
            f"teacher ({cfg.model})",
            batch_size=cfg.batch_size,
            device=device,
            allow_weak=cfg.allow_weak_teacher,
        )
        test = load_split(store, "test")
        metrics = evaluate_model(model, test, len(store.classes), cfg.batch_size, device, True)
        meta = {
            "stage": config_dict(cfg),
            "manifest_sha256": store.manifest_sha256,
            "init_sha256": init_sha,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        sha = save_checkpoint(
            out,
            model.cpu(),
            model_name=cfg.model,
            num_classes=len(store.classes),
            img_size=height,
            config=meta,
            extra={"history": stable_history(history), "role": "teacher", "train_check": check},
        )
        write_curve(history, out.with_suffix(".curve.csv"))
        write_metrics(
            metrics,
            out.with_suffix(".metrics.json"),
            {
                "checkpoint_sha256": sha,
                "role": "teacher",
                "model": cfg.model,
                "fold": cfg.fold,
                "train_check": check,
            },
        )
        state.finish()  # published: the training state is no longer needed
        logger.info("teacher → %s (test Dice %.4f)", out, metrics["dice"])
        return out
