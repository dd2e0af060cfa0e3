"""train_teacher stage: the teacher T, trained on the train split with L_Seg."""

from __future__ import annotations

import logging
from pathlib import Path

from stages.common import (
    augmentation,
    checkpoint_is_current,
    config_dict,
    make_train_config,
    stable_history,
    train_segmenter,
)
from stages.configs import TeacherConfig
from stages.data import load_split, open_store

logger = logging.getLogger(__name__)


def run(cfg: TeacherConfig) -> Path:
    """Train the teacher; a no-op when the checkpoint exists with the same config."""
    from pipeline.checkpoint import save_checkpoint
    from pipeline.models.registry import build_model, check_input_size
    from pipeline.train import resolve_device, seed_everything
    from stages.evaluate import evaluate_model, write_metrics

    out = cfg.out_path
    if checkpoint_is_current(out, cfg, cfg.force):
        logger.info("teacher %s is up to date (same config); use --force to retrain", out)
        return out
    store = open_store(cfg.data_path, cfg.fold)
    height, width = store.size
    check_input_size(cfg.model, height, width)
    seed_everything(cfg.seed)
    model = build_model(cfg.model, num_classes=len(store.classes), img_size=height)
    train = load_split(store, "train")
    history = train_segmenter(
        model,
        train,
        train_cfg=make_train_config(cfg),
        batch_size=cfg.batch_size,
        transform=augmentation(cfg.augment),
        desc="teacher",
    )
    device = resolve_device(cfg.device)
    test = load_split(store, "test")
    metrics = evaluate_model(model, test, len(store.classes), cfg.batch_size, device)
    meta = {"stage": config_dict(cfg), "manifest_sha256": store.manifest_sha256}
    out.parent.mkdir(parents=True, exist_ok=True)
    sha = save_checkpoint(
        out,
        model.cpu(),
        model_name=cfg.model,
        num_classes=len(store.classes),
        img_size=height,
        config=meta,
        extra={"history": stable_history(history), "role": "teacher"},
    )
    write_metrics(
        metrics,
        out.with_suffix(".metrics.json"),
        {"checkpoint_sha256": sha, "role": "teacher", "model": cfg.model},
    )
    logger.info("teacher → %s (test Dice %.4f)", out, metrics["dice"])
    return out
