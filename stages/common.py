"""Small helpers shared by the stages: config serialisation, rerun checks, segmenter training."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stages.data import SplitData, epoch_batches

logger = logging.getLogger(__name__)

# Options that change how a stage runs, never what it produces.
RUNTIME_FIELDS = frozenset(
    {"progress", "force", "overwrite", "device", "workers", "scheduler", "cache_mb"}
)

Transform = Callable[
    [torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]
]


def config_dict(cfg: Any) -> dict:
    """The JSON-able content of a stage config, without runtime-only fields."""
    out = {}
    for f in dataclasses.fields(cfg):
        if f.name in RUNTIME_FIELDS:
            continue
        value = getattr(cfg, f.name)
        out[f.name] = str(value) if isinstance(value, Path) else value
    return json.loads(json.dumps(out, default=str))


def checkpoint_is_current(path: Path, cfg: Any, force: bool) -> bool:
    """True when ``path`` holds a checkpoint made by the same stage config (rerun = no-op)."""
    if force or not Path(path).exists():
        return False
    from pipeline.checkpoint import load_checkpoint

    try:
        meta = load_checkpoint(path)
    except Exception:
        return False
    return meta.get("config", {}).get("stage") == config_dict(cfg)


def train_segmenter(
    model: nn.Module,
    data: SplitData,
    *,
    train_cfg: Any,
    batch_size: int,
    transform: Transform | None,
    desc: str,
) -> list[dict[str, float]]:
    """Train ``model`` with L_Seg on ``data`` (optionally transformed per batch)."""
    from pipeline.losses import seg_loss
    from pipeline.train import fit, resolve_device

    device = resolve_device(train_cfg.device)
    model.to(device)
    generator = torch.Generator().manual_seed(train_cfg.seed)

    def batches(epoch: int):
        for idx in epoch_batches(len(data), batch_size, epoch, train_cfg.seed, drop_last=True):
            images, masks = data.batch(idx, torch.device("cpu"))
            if transform is not None:
                images, masks = transform(images, masks, generator)
            yield images, masks

    def step(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, masks = batch
        return {"loss": seg_loss(net(images), masks)}

    steps = max(1, len(data) // batch_size)
    return fit(model, batches, step, train_cfg, steps_per_epoch=steps, desc=desc)


def stable_history(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """History without wall-clock fields, so same-seed checkpoints stay byte-identical."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def make_train_config(cfg: Any) -> Any:
    """The pipeline TrainConfig of a stage config with epochs, lr, seed, progress, device."""
    from pipeline.train import TrainConfig

    return TrainConfig(
        epochs=cfg.epochs, lr=cfg.lr, seed=cfg.seed, progress=cfg.progress, device=cfg.device
    )


def augmentation(enabled: bool) -> Transform | None:
    """The default geometric + photometric augmentation as a batch transform (or None)."""
    if not enabled:
        return None
    from pipeline.augment import AugmentConfig, augment_batch

    aug = AugmentConfig()

    def transform(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator):
        images, masks, _ = augment_batch(images, masks, None, aug, generator)
        return images, masks

    return transform
