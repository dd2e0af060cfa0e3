"""train_assistant stage: TA_f on FIG false-pixel images, TA_b on boundary-transform images."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from stages import paths
from stages.data import SplitData, epoch_batches, first_images, load_split, open_store
from stages.errors import UserError
from stages.locks import holds_output_lock
from stages.records import checkpoint_is_current, config_dict, init_sha256
from stages.train.common import (
    augmentation,
    make_train_config,
    soft_augmentation,
    split_validation,
    stable_history,
    train_segmenter,
    val_dice,
    write_curve,
)
from stages.train.config import AssistantConfig
from stages.train.resume import TrainingState, drop_obsolete_state

logger = logging.getLogger(__name__)

Kind = Literal["false-pixel", "boundary"]


def _boundary_transform(cfg: AssistantConfig, size: int, num_classes: int):
    from pipeline.bt import BTConfig, boundary_transform, scaled_delta

    bt = BTConfig(delta=scaled_delta(cfg.bt_delta, size), rho=cfg.bt_rho)
    augment = augmentation(cfg.augment)

    def transform(images, masks, generator):
        if augment is not None:
            images, masks = augment(images, masks, generator)
        return boundary_transform(images, masks, bt, generator, num_classes=num_classes), masks

    return transform


def _band_sizes(bt_delta: int, train: SplitData, size: int, num_classes: int) -> list:
    """BT's band and interior sizes per class over the train masks, at the delta BT uses."""
    from pipeline.bt import band_sizes, scaled_delta

    return band_sizes(train.masks.long(), scaled_delta(bt_delta, size), num_classes)


def recompute_bt_bands(config: dict) -> list:
    """The BT bands a boundary assistant's checkpoint records, from its recorded config.

    For checkpoints trained before the bands were recorded: they depend only on the train
    masks the assistant saw (its fold's train split less the val images) and its delta,
    so they come out as training would have recorded them.

    Args:
        config: the checkpoint's ``config``: ``stage`` (its options: ``data``, ``fold``,
            ``val_fraction``, ``bt_delta``) and ``manifest_sha256``.

    Raises:
        FileNotFoundError, KeyError, ValueError: the dataset store cannot be opened from
            here, is not the one the assistant trained on, or a field is missing.
    """
    options = config["stage"]
    store = open_store(Path(options["data"]), options.get("fold"))
    if store.manifest_sha256 != config["manifest_sha256"]:
        raise ValueError(f"{options['data']} is not the dataset store the assistant trained on")
    train, _ = split_validation(load_split(store, "train"), options["val_fraction"])
    return _band_sizes(options["bt_delta"], train, store.size[0], len(store.classes))


class FalsePixelBatches:
    """FIG batches: queue generation from the teacher's false pixels, then alternation.

    Each step observes one real batch (queue generation) and yields one synthetic batch built
    on randomly drawn real GT masks (construction); ``fig_real_fraction`` mixes real images in.

    FIG observes T's argmax on the augmented real batch: a network teacher runs on it; an
    imported teacher's maps (:class:`pipeline.imported.ImportedTeacher`, looked up by the
    batch's ids) are augmented jointly with the images, with the same draws, and their
    argmax taken.
    """

    def __init__(
        self,
        cfg: AssistantConfig,
        teacher: nn.Module,
        data: SplitData,
        num_classes: int,
        device: torch.device | None = None,
    ):
        """``device``: where ``teacher`` runs (default: where its first parameter is; pass it
        for a TorchScript teacher, which may hold its weights as constants, and for an
        imported one, which has none)."""
        from pipeline.fig import FIGConfig, FIGSampler
        from pipeline.imported import ImportedTeacher

        self.cfg, self.teacher, self.data = cfg, teacher.eval(), data
        self.imported = isinstance(teacher, ImportedTeacher)
        self.device = device if device is not None else next(teacher.parameters()).device
        self.generator = torch.Generator().manual_seed(cfg.seed)
        fig = FIGConfig(
            queue_len_pos=cfg.fig_queue_len,
            queue_len_neg=cfg.fig_queue_len,
            pixels_per_image=cfg.fig_pixels_per_image,
            real_fraction=cfg.fig_real_fraction,
            # after the fill passes, start once every queue holds some pixels
            max_warmup_observations=cfg.fig_fill_passes * self._batches_per_pass(data),
        )
        self.sampler = FIGSampler(fig, num_classes, self.generator)
        self.augment = augmentation(cfg.augment)
        self.augment_soft = soft_augmentation(cfg.augment)  # an imported T's maps

    def _batches_per_pass(self, data: SplitData) -> int:
        return -(-len(data) // self.cfg.batch_size)

    def _real(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images, masks = self.data.batch(idx, torch.device("cpu"))
        if self.augment is not None:
            images, masks = self.augment(images, masks, self.generator)
        return images, masks

    @torch.inference_mode()
    def _observe(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        preds = self.teacher(images.to(self.device)).argmax(1).cpu()
        self.sampler.observe(images, preds, masks)

    @torch.inference_mode()
    def _observed(self, idx: torch.Tensor) -> None:
        """Draw the real batch ``idx`` (augmented) and let FIG observe T's argmax on it."""
        if not self.imported:
            self._observe(*self._real(idx))
            return
        images, masks = self.data.batch(idx, torch.device("cpu"))
        soft = self.teacher.probabilities([self.data.ids[i] for i in idx.tolist()])
        if self.augment_soft is not None:  # the same draws as _real's augmentation
            images, masks, soft = self.augment_soft(images, masks, soft, self.generator)
        self.sampler.observe(images, soft.argmax(1), masks)

    def fill(self) -> None:
        """Queue-generation phase: observe the train split until the queues are ready."""
        for p in range(self.cfg.fig_fill_passes):
            for idx in epoch_batches(len(self.data), self.cfg.batch_size, -1 - p, self.cfg.seed):
                self._observed(idx)
                if self.sampler.ready:
                    return
        fills = [self.sampler.queues.fill(c) for c in range(self.sampler.queues.num_classes)]
        raise ValueError(
            f"the teacher made no false pixels of some class in {self.cfg.fig_fill_passes} passes "
            f"over the train split (queue fills per class: {fills}), so FIG cannot build images: "
            "raise --fig-fill-passes or use a teacher trained for fewer epochs."
        )

    def _indices(self, epoch: int) -> Iterator[torch.Tensor]:
        from pipeline.sampling import foreground_weights, step_batches

        n, bs, steps = len(self.data), self.cfg.batch_size, self.cfg.steps_per_epoch
        if steps == 0:  # the old behaviour: one pass over the split
            yield from epoch_batches(n, bs, epoch, self.cfg.seed, drop_last=True)
            return
        weights = foreground_weights(self.data.masks.numpy(), self.cfg.foreground_fraction)
        for idx in step_batches(n, bs, steps, epoch, self.cfg.seed, weights):
            yield torch.from_numpy(idx)

    def __call__(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.data)
        for idx in self._indices(epoch):
            self._observed(idx)  # generation ...
            mask_idx = torch.randint(0, n, (len(idx),), generator=self.generator)
            real_images, gt_masks = self._real(mask_idx)
            yield self.sampler.make_batch(gt_masks, real_images)  # ... alternates with construction


@holds_output_lock("plc train-assistant", lambda cfg: cfg.out_path)  # one writer per output
def run(cfg: AssistantConfig) -> Path:
    """Train one assistant; a no-op when its checkpoint exists with the same config."""
    from pipeline.checkpoint import save_checkpoint
    from pipeline.losses import seg_loss
    from pipeline.models.pretrained import load_init
    from pipeline.models.registry import build_model
    from pipeline.train import GeneratorPart, fit, resolve_device, seed_everything
    from stages.train.checks import check_training

    out = cfg.out_path
    init_sha = init_sha256(cfg.init)
    if checkpoint_is_current(out, cfg, cfg.force, init_sha):
        logger.info("assistant %s is up to date (same config); use --force to retrain", out)
        drop_obsolete_state(out)
        return out
    store = open_store(cfg.data_path, cfg.fold)
    device = resolve_device(cfg.device)
    teacher, tmeta, teacher_sha = _teacher(cfg, store, device)
    model_name = cfg.model or tmeta["model_name"]
    n_classes, size = len(store.classes), store.size[0]
    with TrainingState(
        out,
        {
            "options": config_dict(cfg),
            "inputs": {
                "manifest_sha256": store.manifest_sha256,
                "teacher_sha256": teacher_sha,
                "init_sha256": init_sha,
            },
        },
        resume=cfg.resume,
        command="plc train-assistant",
    ) as state:
        seed_everything(cfg.seed)
        model = build_model(model_name, num_classes=n_classes, img_size=size)
        if cfg.init is not None:
            load_init(model, cfg.init)
        train, val = split_validation(load_split(store, "train"), cfg.val_fraction)
        train_cfg = make_train_config(cfg)
        if cfg.kind == "boundary":
            diagnostics = {"bt_bands": _band_sizes(cfg.bt_delta, train, size, n_classes)}
            history = train_segmenter(
                model,
                train,
                train_cfg=train_cfg,
                batch_size=cfg.batch_size,
                transform=_boundary_transform(cfg, size, n_classes),
                desc="assistant (BT)",
                steps_per_epoch=cfg.steps_per_epoch,
                foreground_fraction=cfg.foreground_fraction,
                val=val,
                num_classes=n_classes,
                state=state,
            )
        else:
            fig = FalsePixelBatches(cfg, teacher, train, n_classes, device)
            if not state.resuming:  # a resumed run restores the filled queues from its state
                fig.fill()
            history = fit(
                model.to(device),
                fig,
                lambda net, b: {"loss": seg_loss(net(b[0]), b[1])},
                train_cfg,
                steps_per_epoch=cfg.steps_per_epoch or max(1, len(train) // cfg.batch_size),
                evaluate=None if val is None else val_dice(val, n_classes, cfg.batch_size, device),
                desc="assistant (FIG)",
                state=state,
                parts={"fig_generator": GeneratorPart(fig.generator), "fig_sampler": fig.sampler},
            )
            diagnostics = {"fig_queues": fig.sampler.queues.summary(),
                           "fig_observations": fig.sampler.observations}  # fmt: skip
        check = check_training(
            model,
            train,
            store.classes,
            f"assistant {cfg.kind} ({model_name})",
            batch_size=cfg.batch_size,
            device=device,
            allow_weak=cfg.allow_weak_teacher,
            floor=_dice_floor(cfg),
        )
        meta = {
            "stage": config_dict(cfg),
            "manifest_sha256": store.manifest_sha256,
            "teacher_sha256": teacher_sha,
            "teacher_kind": tmeta.get("teacher_kind"),  # checkpoint, torchscript, imported, None
            "init_sha256": init_sha,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(
            out,
            model.cpu(),
            model_name=model_name,
            num_classes=n_classes,
            img_size=size,
            config=meta,
            extra={
                "history": stable_history(history),
                "role": f"assistant-{cfg.kind}",
                "train_check": check,
                "diagnostics": diagnostics,  # what the assistant trained on (plc report shows it)
            },
        )
        write_curve(history, out.with_suffix(".curve.csv"))
        state.finish()  # published: the training state is no longer needed
        logger.info("assistant (%s) → %s", cfg.kind, out)
        return out


def _teacher(cfg: AssistantConfig, store, device: torch.device) -> tuple:
    """``(T on device, its meta, its SHA-256)``, or ``(None, {}, None)`` when T is not
    needed (a boundary assistant with ``--model``). FIG needs T's false pixels; without
    ``--model`` the assistant copies T's architecture, which a TorchScript file or an
    imported teacher has none of. An imported teacher must hold a map of every train image
    (checked here, before any work); its SHA-256 is its content digest."""
    from pipeline.imported import ImportedTeacher
    from pipeline.torchscript import has_no_architecture, load_teacher, teacher_meta, teacher_sha256

    if cfg.kind == "boundary" and cfg.model is not None:
        return None, {}, None
    path = paths.require(
        cfg.teacher_path,
        "teacher checkpoint",
        f"plc train-teacher --dataset {cfg.dataset}` or `plc import-teacher --dataset "
        f"{cfg.dataset} --probs DIR",
    )
    if cfg.model is None and has_no_architecture(path):
        kind = {"torchscript": "a TorchScript", "imported": "an imported"}[
            teacher_meta(path)["teacher_kind"]
        ]
        raise UserError(
            f"--model is required with {kind} teacher: "
            f"{path} names no registry architecture for the assistant to copy; pass --model "
            "(`plc models` lists them)."
        )
    if cfg.kind == "boundary":  # BT needs only T's architecture: T is read, not built
        return None, teacher_meta(path), teacher_sha256(path)
    images = first_images(store, "train", cfg.batch_size, device)  # the contract's check
    teacher, meta = load_teacher(path, images, len(store.classes))
    if isinstance(teacher, ImportedTeacher):
        from stages.import_teacher.use import check_fits

        check_fits(teacher, store, cfg.dataset)
    return teacher, meta, teacher_sha256(path)


def _dice_floor(cfg: AssistantConfig) -> float:
    """The training check's Dice floor on the real train images.

    An assistant that trained on transformed images only — TA_f on FIG collages with
    ``--fig-real-fraction 0`` (the paper), TA_b always on boundary-transformed images — is
    checked on images it never saw: its Dice there measures transfer, not whether it learned
    (measured on the default synthetic run: TA_f 0.24, TA_b 0.13). Whether it helps is what
    the cascade's false-pixel counts show (label-quality table of ``plc report``), so only the
    one-class rule applies to it; a TA_f that also saw real images keeps the floor.
    """
    from stages.train.checks import TRAIN_DICE_FLOOR, saw_real_images

    return TRAIN_DICE_FLOOR if saw_real_images(cfg.kind, cfg.fig_real_fraction) else 0.0
