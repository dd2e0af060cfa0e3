"""The options every stage shares, and the configs of the commands that are no stage's own.

Each field is an :func:`~stages.options.option` (type, default, help, checks), declared once:
a stage's own config lives beside it (``stages/<stage>/config.py``); the fields several
stages share are the ``*_option()`` functions here, and :class:`TrainOptions` is every
training stage's (teacher, assistants, students). ``stages.cli`` builds the commands from the
config classes, the stage modules run them, DVC passes values from ``params.yaml``.
Cross-field checks are each config's ``problems()``. Nothing here imports torch or zarr
(``plc --help`` imports this module).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stages.options import StageConfig, option

KINDS: tuple[str, ...] = ("false-pixel", "boundary")
SPLITS: tuple[str, ...] = ("train", "val", "test")


def model_choices() -> list[str]:
    from pipeline.models.registry import MODELS

    return list(MODELS)


def progress_option() -> bool:
    return option(True, help="Show progress bars (--no-progress hides them).", runtime=True)


def force_option() -> bool:
    return option(False, help="Rebuild even if the output is up to date.", runtime=True)


def device_option() -> str:
    return option("auto", help="auto, cpu, cuda or cuda:N.", runtime=True)


def seed_option() -> int:
    return option(0, help="Random seed.", ge=0, lt=2**32)


def fold_option() -> int | None:
    return option(
        None,
        help="Cross-validation fold F of a store prepared with --folds K: train on the other "
        "folds, test on fold F; default paths gain fold<F> (models/<ds>/fold<F>/, "
        "labels/<ds>-fold<F>.zarr). Default: the stored split.",
        ge=0,
    )


def init_option() -> Path | None:
    return option(
        None,
        help="Initial weights: TransUNet's official R50+ViT-B_16.npz (ImageNet-21k; "
        "--model transunet) or a state_dict / plc-kd checkpoint of the same network. "
        "Default: random.",
        exists=True,
    )


# --------------------------------------------------------------------------- training


@dataclass(frozen=True, kw_only=True)
class TrainOptions(StageConfig):
    """The options every training stage shares (teacher, assistants, students)."""

    epochs: int = option(50, help="Training epochs.", ge=1)
    batch_size: int = option(8, help="Images per optimizer step.", ge=1)
    lr: float = option(1e-3, help="Peak learning rate.", gt=0)
    seed: int = seed_option()
    fold: int | None = fold_option()
    augment: bool = option(True, help="Geometric + photometric augmentation.")
    # the training recipe (issue 9; defaults measured in reports/recipe.md)
    steps_per_epoch: int = option(
        250,
        help="Optimizer steps per epoch whatever the dataset's size (nnU-Net: 250); "
        "0: one pass over the train split per epoch (the old behaviour).",
        ge=0,
    )
    warmup_steps: int = option(30, help="Linear LR warmup steps; 0: none.", ge=0)
    ema_decay: float = option(
        0.99,
        help="Decay of the EMA of the weights that is evaluated and saved; 0: no EMA.",
        ge=0,
        lt=1,
    )
    grad_clip: float = option(1.0, help="Max global gradient norm; 0: no clipping.", ge=0)
    foreground_fraction: float = option(  # off: measured to hurt (reports/recipe.md)
        0.0,
        help="Share of sampled images with foreground, small lesions first; 0: uniform.",
        ge=0,
        le=1,
    )
    val_fraction: float = option(
        0.0,
        help="Seeded share of the train split held out for val Dice per epoch (curve.csv).",
        ge=0,
        lt=1,
    )
    allow_weak_teacher: bool = option(
        False,
        help="Go on when the trained network fails the training check (train-split Dice "
        "below 0.25 or one class everywhere).",
        runtime=True,
    )
    resume: bool = option(
        False,
        help="Continue an interrupted run from <out>.train-state (written after every "
        "epoch), bit for bit on CPU; start from epoch 0 when there is none. Refused when "
        "the options or inputs differ.",
        runtime=True,
    )
    device: str = device_option()
    force: bool = force_option()
    progress: bool = progress_option()


# --------------------------------------------------------------------------- evaluate


@dataclass(frozen=True)
class EvaluateConfig(StageConfig):
    """Options of ``plc evaluate``."""

    checkpoint: Path = option(help="Any plc-kd checkpoint.", exists=True)
    data: str = option(help="Dataset store: a path or URL.", exists=True)
    split: str = option("test", help="Split to evaluate.", choices=SPLITS)
    fold: int | None = fold_option()
    out: Path | None = option(None, help="Metrics JSON path (default beside the checkpoint).")
    batch_size: int = option(16, help="Images per forward.", ge=1)
    device: str = device_option()
