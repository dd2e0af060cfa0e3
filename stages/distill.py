"""distill stage: train a student from the label store (or the live team), then evaluate it."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from pipeline.variants import NO_KD
from stages.common import checkpoint_is_current, config_dict, stable_history
from stages.configs import DistillConfig
from stages.data import SplitData, epoch_batches, load_split, open_labels_with_data

logger = logging.getLogger(__name__)

class StoredLabels:
    """Soft labels of one variant read from the store, held as int8 codes in memory."""

    def __init__(self, store, variant: str, data: SplitData):
        if list(store.ids) != data.ids:
            raise ValueError(
                f"label store {store.path} lists other train images than the dataset store."
            )
        self.codes = store.read_codes(variant, slice(None))  # (N, C, H, W) int8

    def __call__(
        self, idx: torch.Tensor, images: torch.Tensor, masks: torch.Tensor
    ) -> torch.Tensor:
        """Log-probabilities (B, C, H, W) of the images at ``idx``."""
        from storage_schema import decode_logprobs

        return torch.from_numpy(decode_logprobs(self.codes[idx.numpy()]))


def _batches(cfg: DistillConfig, data: SplitData, labels, device: torch.device):
    from pipeline.augment import AugmentConfig, augment_batch

    aug = AugmentConfig() if cfg.augment else None
    generator = torch.Generator().manual_seed(cfg.seed)

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, ...]]:
        for idx in epoch_batches(len(data), cfg.batch_size, epoch, cfg.seed, drop_last=True):
            images, masks = data.batch(idx, torch.device("cpu"))
            logp = labels(idx, images, masks) if labels is not None else None
            if aug is not None:
                soft = logp.exp() if logp is not None else None
                images, masks, soft = augment_batch(images, masks, soft, aug, generator)
                logp = torch.log(soft.clamp_min(1e-12)) if soft is not None else None
            batch = (images, masks) if logp is None else (images, masks, logp)
            yield tuple(t.to(device, non_blocking=True) for t in batch)

    return batches


def _step(cfg: DistillConfig):
    from pipeline.losses import cwd_loss, kd_loss, seg_loss

    response = kd_loss if cfg.loss == "kd" else cwd_loss

    def step(net: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        logits = net(batch[0])
        seg = seg_loss(logits, batch[1])
        if len(batch) == 2:
            return {"loss": seg, "seg": seg}
        kd = response(logits, batch[2], cfg.tau)
        return {"loss": seg + cfg.lam * kd, "seg": seg, cfg.loss: kd}

    return step


def run(cfg: DistillConfig) -> Path:
    """Train and evaluate one student; returns the ``metrics.json`` path."""
    from pipeline.checkpoint import save_checkpoint
    from pipeline.models.registry import build_model, check_input_size
    from pipeline.train import fit, resolve_device, seed_everything
    from stages.common import make_train_config
    from stages.evaluate import evaluate_model, write_metrics

    out = Path(cfg.out)
    if (
        checkpoint_is_current(out / "student.pt", cfg, cfg.force)
        and (out / "metrics.json").exists()
    ):
        logger.info("student %s is up to date (same config); use --force to retrain", out)
        return out / "metrics.json"
    store, label_store = open_labels_with_data(cfg.labels, cfg.data)
    height, width = store.size
    check_input_size(cfg.student, height, width)
    device = resolve_device(cfg.device)
    train = load_split(store, "train")
    labels = None
    if cfg.variant != NO_KD:
        labels = (
            _live_labels(cfg, label_store, train, device)
            if cfg.live
            else StoredLabels(label_store, cfg.variant, train)
        )
    seed_everything(cfg.seed)
    n_classes = len(store.classes)
    model = build_model(cfg.student, num_classes=n_classes, img_size=height).to(device)
    history = fit(
        model,
        _batches(cfg, train, labels, device),
        _step(cfg),
        make_train_config(cfg),
        steps_per_epoch=max(1, len(train) // cfg.batch_size),
        desc=f"student ({cfg.variant})",
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
        extra={"history": stable_history(history), "role": "student"},
    )
    _write_curve(history, out / "curve.csv")
    metrics = evaluate_model(
        model.to(device), load_split(store, "test"), n_classes, cfg.batch_size, device
    )
    extra = {"config": config_dict(cfg), "dataset": store.name, "split": "test"}
    logger.info("student %s: test Dice %.4f IoU %.4f", out, metrics["dice"], metrics["iou"])
    return write_metrics(metrics, out / "metrics.json", extra)


def _write_curve(history: list[dict[str, float]], path: Path) -> None:
    keys = sorted({k for row in history for k in row})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def _live_labels(cfg: DistillConfig, label_store, train: SplitData, device: torch.device):
    from stages.live import LiveLabels

    return LiveLabels(label_store, cfg.variant, train, device)
