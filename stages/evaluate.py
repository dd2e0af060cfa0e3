"""Evaluate stage: any checkpoint on any split → per-image Dice/IoU, JSON + CSV."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import torch
from torch import nn

from stages.common import config_dict
from stages.configs import EvaluateConfig
from stages.data import SplitData, epoch_batches, load_split, open_store

logger = logging.getLogger(__name__)


@torch.inference_mode()
def predict(
    model: nn.Module, data: SplitData, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Argmax predictions (N, H, W) int64 of ``model`` over ``data``, on the CPU."""
    model.eval()
    preds = []
    for idx in epoch_batches(len(data), batch_size, 0, 0, shuffle=False):
        images, _ = data.batch(idx, device)
        preds.append(model(images).argmax(1).cpu())
    return torch.cat(preds)


def evaluate_model(
    model: nn.Module, data: SplitData, num_classes: int, batch_size: int, device: torch.device
) -> dict:
    """Per-image Dice and IoU of ``model`` on ``data`` with their mean and std."""
    from pipeline.metrics import mean_std

    dice, iou = _dice_iou_by_batch(model, data, num_classes, batch_size, device)
    dice_mean, dice_std = mean_std(dice)
    iou_mean, iou_std = mean_std(iou)
    return {
        "n_images": len(data),
        "dice": dice_mean,
        "dice_std": dice_std,
        "iou": iou_mean,
        "iou_std": iou_std,
        "per_image": [
            {"id": i, "dice": float(d), "iou": float(u)}
            for i, d, u in zip(data.ids, dice.tolist(), iou.tolist(), strict=True)
        ],
    }


@torch.inference_mode()
def _dice_iou_by_batch(
    model: nn.Module, data: SplitData, num_classes: int, batch_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image Dice and IoU (N,), batch by batch: only per-image scores are kept."""
    from pipeline.metrics import dice_iou

    model.eval()
    scores = []
    for idx in epoch_batches(len(data), batch_size, 0, 0, shuffle=False):
        images, masks = data.batch(idx, device)
        scores.append([s.cpu() for s in dice_iou(model(images).argmax(1), masks, num_classes)])
    return torch.cat([d for d, _ in scores]), torch.cat([u for _, u in scores])


def write_metrics(metrics: dict, out: Path, extra: dict | None = None) -> Path:
    """Write ``<name>.json`` (summary + config) and ``<name>_per_image.csv`` beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in metrics.items() if k != "per_image"}
    summary.update(extra or {})
    csv_path = out.with_name(out.name.removesuffix(".json") + "_per_image.csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "dice", "iou"])
        writer.writeheader()
        writer.writerows(metrics["per_image"])
    out.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return out


def run(cfg: EvaluateConfig) -> Path:
    """Evaluate ``cfg.checkpoint`` on ``cfg.split`` of ``cfg.data``; returns the JSON path."""
    from pipeline.checkpoint import build_from_checkpoint
    from pipeline.train import resolve_device

    device = resolve_device(cfg.device)
    model, meta = build_from_checkpoint(cfg.checkpoint)
    store = open_store(cfg.data, cfg.fold)
    data = load_split(store, cfg.split)
    metrics = evaluate_model(model.to(device), data, meta["num_classes"], cfg.batch_size, device)
    out = cfg.out or Path(cfg.checkpoint).with_suffix(f".{cfg.split}.json")
    extra = {
        "checkpoint": str(cfg.checkpoint),
        "split": cfg.split,
        "fold": cfg.fold,
        "config": config_dict(cfg),
    }
    logger.info(
        "%s on %s/%s: Dice %.4f IoU %.4f",
        cfg.checkpoint,
        cfg.data,
        cfg.split,
        metrics["dice"],
        metrics["iou"],
    )
    return write_metrics(metrics, out, extra)
