"""Evaluate stage: any checkpoint on any split → per-image Dice/IoU, JSON + CSV."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import torch
from torch import nn

from stages.configs import EvaluateConfig
from stages.data import SplitData, epoch_batches, load_split, open_store
from stages.records import config_dict

logger = logging.getLogger(__name__)


@torch.inference_mode()
def evaluate_model(
    model: nn.Module,
    data: SplitData,
    num_classes: int,
    batch_size: int,
    device: torch.device,
    boundary: bool = False,
) -> dict:
    """Per-image Dice and IoU of ``model`` on ``data`` with their mean and std; with
    ``boundary``, also HD95 and ASSD in pixels (:mod:`pipeline.boundary`; images where they
    are undefined are NaN per image, skipped in the mean and counted)."""
    from pipeline.metrics import mean_std

    scores = _scores_by_batch(model, data, num_classes, batch_size, device, boundary)
    out: dict = {"n_images": len(data)}
    for name, values in scores.items():
        out[name], out[f"{name}_std"] = mean_std(values)
    if boundary:
        out["boundary_undefined"] = int(torch.isnan(scores["hd95"]).sum())
    values = {name: v.tolist() for name, v in scores.items()}
    out["per_image"] = [
        {"id": image_id, **{name: float(v[i]) for name, v in values.items()}}
        for i, image_id in enumerate(data.ids)
    ]
    return out


@torch.inference_mode()
def _scores_by_batch(
    model: nn.Module,
    data: SplitData,
    num_classes: int,
    batch_size: int,
    device: torch.device,
    boundary: bool,
) -> dict[str, torch.Tensor]:
    """Per-image scores (N,) by name, batch by batch: only per-image scores are kept.

    Names: ``dice``, ``iou`` (means over the foreground classes), ``dice_class<c>`` for
    each foreground class c when there are more than two classes, ``hd95``/``assd``.
    """
    from pipeline.boundary import boundary_distances
    from pipeline.metrics import dice_iou, dice_iou_per_class

    model.eval()
    scores: dict[str, list[torch.Tensor]] = {}
    for idx in epoch_batches(len(data), batch_size, 0, 0, shuffle=False):
        images, masks = data.batch(idx, device)
        pred = model(images).argmax(1)
        batch = dict(zip(("dice", "iou"), dice_iou(pred, masks, num_classes), strict=True))
        if num_classes > 2:  # per-class Dice: dice_class<c> for every foreground class c
            per_class, _ = dice_iou_per_class(pred, masks, num_classes)  # (B, C-1)
            batch.update({f"dice_class{c}": per_class[:, c - 1] for c in range(1, num_classes)})
        if boundary:
            batch["hd95"], batch["assd"] = boundary_distances(pred.cpu(), masks.cpu(), num_classes)
        for name, values in batch.items():
            scores.setdefault(name, []).append(values.cpu())
    return {name: torch.cat(parts) for name, parts in scores.items()}


def write_metrics(metrics: dict, out: Path, extra: dict | None = None) -> Path:
    """Write ``<name>.json`` (summary + config) and ``<name>_per_image.csv`` beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in metrics.items() if k != "per_image"}
    summary.update(extra or {})
    csv_path = out.with_name(out.name.removesuffix(".json") + "_per_image.csv")
    with open(csv_path, "w", newline="") as f:
        rows = metrics["per_image"]
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["id", "dice", "iou"])
        writer.writeheader()
        writer.writerows(rows)
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
    metrics = evaluate_model(
        model.to(device), data, meta["num_classes"], cfg.batch_size, device, boundary=True
    )
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
