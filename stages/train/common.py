"""Segmenter training shared by the training stages and distill: the validation split, the
L_Seg training loop, val Dice per epoch, curves and the train config."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stages.data import SplitData, epoch_batches

logger = logging.getLogger(__name__)

Transform = Callable[
    [torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]
]


def split_validation(data: SplitData, fraction: float) -> tuple[SplitData, SplitData | None]:
    """(train, val): a seeded ``fraction`` of the train split held out for learning curves.

    The held-out images depend only on the split's size and ``VAL_SEED`` (the same for every
    run seed and every stage); ``fraction`` 0 holds out nothing (val is None).
    """
    from pipeline.sampling import validation_indices

    if fraction == 0:
        return data, None
    val = validation_indices(len(data), fraction)
    keep = np.setdiff1d(np.arange(len(data)), val)
    return subset(data, keep), subset(data, val)


def subset(data: SplitData, idx: np.ndarray) -> SplitData:
    """The images ``idx`` (positions in ``data``) of a split, as a SplitData."""
    t = torch.from_numpy(np.asarray(idx, dtype=np.int64))
    return SplitData(
        images=data.images[t],
        masks=data.masks[t],
        indices=data.indices[idx],
        ids=[data.ids[i] for i in idx],
    )


def train_segmenter(
    model: nn.Module,
    data: SplitData,
    *,
    train_cfg: Any,
    batch_size: int,
    transform: Transform | None,
    desc: str,
    steps_per_epoch: int = 0,
    foreground_fraction: float = 0.0,
    val: SplitData | None = None,
    num_classes: int | None = None,
    state: Any = None,
) -> list[dict[str, float]]:
    """Train ``model`` with L_Seg on ``data`` (optionally transformed per batch).

    Args:
        steps_per_epoch: optimiser steps per epoch, drawn by ``pipeline.sampling``
            whatever the split's size; 0 is the old behaviour: one shuffled pass over the
            split per epoch (``len(data) // batch_size`` steps).
        foreground_fraction: with steps_per_epoch > 0, the share of draws given to images
            with foreground, small lesions first (``foreground_weights``); 0 is uniform.
        val: images to compute ``val_dice`` on after each epoch (needs ``num_classes``).
        state: an ``EpochState`` (``stages.train.resume.TrainingState``): epoch-end snapshots,
            resume; the augmentation generator is saved with them.

    Returns:
        fit()'s history; with ``val``, each record has ``val_dice`` (mean per-image Dice).
    """
    from pipeline.losses import seg_loss
    from pipeline.sampling import foreground_weights, step_batches
    from pipeline.train import GeneratorPart, fit, resolve_device

    device = resolve_device(train_cfg.device)
    model.to(device)
    generator = torch.Generator().manual_seed(train_cfg.seed)
    weights = foreground_weights(data.masks.numpy(), foreground_fraction)

    def indices(epoch: int):
        if steps_per_epoch == 0:
            yield from epoch_batches(len(data), batch_size, epoch, train_cfg.seed, drop_last=True)
            return
        for idx in step_batches(
            len(data), batch_size, steps_per_epoch, epoch, train_cfg.seed, weights
        ):
            yield torch.from_numpy(idx)

    def batches(epoch: int):
        for idx in indices(epoch):
            images, masks = data.batch(idx, torch.device("cpu"))
            if transform is not None:
                images, masks = transform(images, masks, generator)
            yield images, masks

    def step(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, masks = batch
        return {"loss": seg_loss(net(images), masks)}

    steps = steps_per_epoch or max(1, len(data) // batch_size)
    evaluate = None
    if val is not None:
        if num_classes is None:
            raise ValueError("train_segmenter needs num_classes to score the validation images.")
        evaluate = val_dice(val, num_classes, batch_size, device)
    return fit(
        model,
        batches,
        step,
        train_cfg,
        steps_per_epoch=steps,
        evaluate=evaluate,
        desc=desc,
        state=state,
        parts={"augment_generator": GeneratorPart(generator)} if state is not None else None,
    )


def val_dice(
    val: SplitData, num_classes: int, batch_size: int, device: torch.device
) -> Callable[[nn.Module], dict[str, float]]:
    """``fit``'s ``evaluate``: the mean per-image Dice on ``val`` as ``{"val_dice": ...}``."""
    from stages.evaluate import evaluate_model

    def evaluate(model: nn.Module) -> dict[str, float]:
        return {"val_dice": evaluate_model(model, val, num_classes, batch_size, device)["dice"]}

    return evaluate


def write_curve(history: list[dict[str, float]], path: Path) -> Path:
    """The per-epoch history as CSV (``epoch``, ``loss``, ``lr``, ``val_dice`` ...) for DVC plots."""
    keys = sorted({k for row in history for k in row if k != "seconds"})
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows({k: row.get(k, "") for k in keys} for row in history)
    return path


def stable_history(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """History without wall-clock fields, so same-seed checkpoints stay byte-identical."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def make_train_config(cfg: Any) -> Any:
    """The pipeline TrainConfig of a stage config (``stages.configs.TrainOptions``)."""
    from pipeline.train import TrainConfig

    return TrainConfig(
        epochs=cfg.epochs,
        lr=cfg.lr,
        seed=cfg.seed,
        progress=cfg.progress,
        device=cfg.device,
        warmup_steps=cfg.warmup_steps,
        ema_decay=cfg.ema_decay,
        grad_clip=cfg.grad_clip or None,  # 0 on the CLI: no clipping
    )


def augmentation(enabled: bool) -> Transform | None:
    """The default geometric + photometric augmentation as a batch transform (or None):
    :func:`soft_augmentation` without a probability map."""
    soft = soft_augmentation(enabled)
    if soft is None:
        return None

    def transform(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator):
        images, masks, _ = soft(images, masks, None, generator)
        return images, masks

    return transform


SoftTransform = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Generator],
    tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
]


def soft_augmentation(enabled: bool) -> SoftTransform | None:
    """:func:`augmentation` that also moves a probability map (B, C, H, W) with its image:
    the same draws from the generator, the same images and masks, the map resampled with
    the same geometry (``pipeline.augment.augment_batch``); None when disabled."""
    if not enabled:
        return None
    from pipeline.augment import AugmentConfig, augment_batch

    aug = AugmentConfig()

    def transform(images, masks, soft, generator):  # type: ignore[no-untyped-def]
        images, masks, soft = augment_batch(images, masks, soft, aug, generator)
        return images, masks, soft

    return transform
