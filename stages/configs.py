"""The configs of the ``plc`` stages: every CLI option is declared here, once.

Each field is an :func:`~stages.options.option` (type, default, help, checks); ``stages.cli``
builds the commands from these classes, the stage modules run them, DVC passes values from
``params.yaml``. Cross-field checks are each config's ``problems()``. Nothing here imports
torch or zarr (``plc --help`` imports this module).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.variants import DISTILL_CHOICES
from stages import paths
from stages.options import StageConfig, option

_STORE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")  # storage_schema's rule for a store name
KINDS: tuple[str, ...] = ("false-pixel", "boundary")
LOSSES: tuple[str, ...] = ("kd", "cwd")
SPLITS: tuple[str, ...] = ("train", "val", "test")


def _layouts() -> list[str]:
    from stages.readers import LAYOUTS

    return list(LAYOUTS)


def _models() -> list[str]:
    from pipeline.models.registry import MODELS

    return list(MODELS)


def _search_backends() -> list[str]:
    from pipeline.search import BACKENDS

    return list(BACKENDS)


def _progress() -> bool:
    return option(True, help="Show progress bars (--no-progress hides them).", runtime=True)


def _force() -> bool:
    return option(False, help="Rebuild even if the output is up to date.", runtime=True)


def _device() -> str:
    return option("auto", help="auto, cpu, cuda or cuda:N.", runtime=True)


def _seed() -> int:
    return option(0, help="Random seed.", ge=0, lt=2**32)


def _fold() -> int | None:
    return option(
        None,
        help="Cross-validation fold F of a store prepared with --folds K: train on the other "
        "folds, test on fold F; default paths gain fold<F> (models/<ds>/fold<F>/, "
        "labels/<ds>-fold<F>.zarr). Default: the stored split.",
        ge=0,
    )


def _init() -> Path | None:
    return option(
        None,
        help="Initial weights: TransUNet's official R50+ViT-B_16.npz (ImageNet-21k; "
        "--model transunet) or a state_dict / plc-kd checkpoint of the same network. "
        "Default: random.",
        exists=True,
    )


# --------------------------------------------------------------------------- prepare


@dataclass(frozen=True)
class PrepareConfig(StageConfig):
    """What ``plc prepare`` builds (see the README's "Datasets" for each layout)."""

    dataset: str = option(help="Layout of the raw dataset.", choices=_layouts)
    out: Path | None = option(None, help="Store path (default data/<dataset>.zarr).")
    root: Path | None = option(None, help="Root folder of the raw dataset.")
    size: int = option(224, help="Side of the square images, a multiple of 16.", ge=32, le=2048)
    split: float = option(0.8, help="Train fraction where the layout has no split.", gt=0, lt=1)
    seed: int = _seed()
    count: int = option(200, help="Number of images (synthetic only).", ge=2)
    include_negatives: bool = option(False, help="Add images without lesions.")
    mask_suffix: str = option(
        "",
        help="Removed from the end of a mask's file stem to give its pairing key (folder, "
        "glob): masks <stem>_lesion.png pair with images <stem>.jpg via --mask-suffix _lesion.",
    )
    image_suffix: str = option(
        "", help="Removed from the end of an image's file stem to give its key (folder, glob)."
    )
    images: str | None = option(
        None,
        help="Glob of the image files relative to --root, e.g. '*/*_Dermoscopic_Image/*.bmp' (glob).",
    )
    masks: str | None = option(
        None, help="Glob of the mask files relative to --root, e.g. '*/*_lesion/*.bmp' (glob)."
    )
    classes: str | None = option(
        None,
        help="Multi-class masks: class=value in class-id order, background first, e.g. "
        "'background=0,lesion_a=1,lesion_b=2', or colours 'background=#000000,a=#ff0000'. "
        "Default: binary masks, thresholded.",
    )
    synthetic_classes: int = option(
        2,
        help="Classes of the synthetic data, background included (3: two lesion types).",
        ge=2,
        le=6,
    )
    synthetic_stripes: int = option(
        0,
        help="Synthetic capacity cue: the lesion and one or two look-alikes of its colour "
        "and size carry stripes, the lesion's at one of K orientations, the look-alikes' at "
        "the K between them (binary only; 0: the plain generator).",
        ge=0,
        le=8,
    )
    folds: int = option(
        0,
        help="Cross-validation folds K: a fold per image in the manifest, stratified by "
        "empty masks (stages then take --fold F); 0: none.",
        ge=0,
    )
    fold_seed: int | None = option(
        None, help="Seed of the fold assignment (default: --seed).", ge=0, lt=2**32
    )
    overwrite: bool = option(False, help="Replace an existing store.", runtime=True)
    progress: bool = _progress()

    def __post_init__(self) -> None:
        if self.out is None:
            object.__setattr__(self, "out", paths.data_path(self.dataset))
        super().__post_init__()

    def problems(self) -> list[str]:
        from stages.readers import LAYOUTS

        layout = LAYOUTS[self.dataset]
        out: list[str] = []
        if self.size % 16:
            out.append(f"--size must be a multiple of 16 between 32 and 2048, got {self.size}.")
        if not _STORE_NAME.match(self.out.stem):  # type: ignore[union-attr]
            out.append(
                f"--out's name {self.out.stem!r} must use only letters, digits, '_', '.' or '-'."  # type: ignore[union-attr]
            )
        if layout.needs_root and self.root is None:
            out.append(f"--root is required for dataset '{self.dataset}': pass its raw folder.")
        elif layout.needs_root and not self.root.is_dir():  # type: ignore[union-attr]
            out.append(f"--root {self.root} does not exist or is not a folder.")
        if self.folds == 1:
            out.append("--folds must be 0 (no folds) or at least 2, got 1.")
        if self.fold_seed is not None and not self.folds:
            out.append("--fold-seed needs --folds K (K >= 2).")
        if self.include_negatives and layout.negatives is None:
            allowed = ", ".join(name for name, lay in LAYOUTS.items() if lay.negatives)
            out.append(f"--include-negatives is only supported by dataset(s): {allowed}.")
        return out + self._naming_problems(layout) + self._class_problems(layout)

    def _naming_problems(self, layout) -> list[str]:
        from stages.readers import LAYOUTS

        out = []
        for name in ("mask_suffix", "image_suffix", "images", "masks"):
            if getattr(self, name) not in ("", None) and name not in layout.naming:
                allowed = ", ".join(n for n, lay in LAYOUTS.items() if name in lay.naming)
                flag = "--" + name.replace("_", "-")
                out.append(f"{flag} is only for --dataset {allowed}, not '{self.dataset}'.")
        if "images" in layout.naming and not (self.images and self.masks):
            out.append(
                f"--dataset {self.dataset} needs --images GLOB and --masks GLOB (relative to "
                "--root), e.g. --images 'images/*.jpg' --masks 'masks/*.png'."
            )
        return out

    def _class_problems(self, layout) -> list[str]:
        if self.classes is not None and not layout.needs_root:
            return [f"--classes maps mask files; for '{self.dataset}' use --synthetic-classes."]
        if self.synthetic_classes != 2 and layout.needs_root:
            return ["--synthetic-classes is only for --dataset synthetic; use --classes."]
        if self.synthetic_stripes and layout.needs_root:
            return ["--synthetic-stripes is only for --dataset synthetic."]
        if self.synthetic_stripes == 1 or (self.synthetic_stripes and self.synthetic_classes != 2):
            return [
                "--synthetic-stripes takes 0 or 2..8 and needs --synthetic-classes 2, got "
                f"{self.synthetic_stripes} with {self.synthetic_classes} classes."
            ]
        if self.classes is None:
            return []
        from stages.readers import parse_classes

        try:
            parse_classes(self.classes)
        except ValueError as err:
            return [str(err)]
        return []

    def class_names(self) -> tuple[str, ...]:
        """The store's class names: from --classes, the synthetic count, or the layout."""
        from stages.readers import LAYOUTS, parse_classes

        if self.classes is not None:
            return parse_classes(self.classes).names
        if self.synthetic_classes > 2:
            return (
                "background",
                *(f"lesion_{chr(97 + i)}" for i in range(self.synthetic_classes - 1)),
            )
        return LAYOUTS[self.dataset].classes

    def identity(self) -> dict:
        """The fields that decide the store's content (not where it goes or how it is run)."""
        from stages.readers import LAYOUTS

        reads_root = self.root is not None and LAYOUTS[self.dataset].needs_root
        return {
            "dataset": self.dataset,
            "root": str(self.root.resolve()) if reads_root else None,  # type: ignore[union-attr]
            "size": self.size,
            "split": self.split,
            "seed": self.seed,
            "count": self.count if self.dataset == "synthetic" else None,
            "include_negatives": self.include_negatives,
            # only with folds, so a store prepared without them keeps its digest
            **({"folds": self.folds, "fold_seed": self.fold_seed_value} if self.folds else {}),
            # likewise only when set: naming and classes change which files pair and the masks
            **{k: v for k, v in self._naming_and_classes().items() if v not in ("", None, 2)},
            **({"synthetic_stripes": self.synthetic_stripes} if self.synthetic_stripes else {}),
        }

    def _naming_and_classes(self) -> dict:
        from stages.readers import parse_classes

        return {
            "mask_suffix": self.mask_suffix,
            "image_suffix": self.image_suffix,
            "images": self.images,
            "masks": self.masks,
            "classes": parse_classes(self.classes).spec() if self.classes else None,
            "synthetic_classes": self.synthetic_classes,
        }

    def naming(self):
        """The readers' :class:`~stages.readers.Naming` of these options."""
        from stages.readers import Naming

        return Naming(self.image_suffix, self.mask_suffix, self.images, self.masks)

    @property
    def fold_seed_value(self) -> int:
        """The seed of the fold assignment: ``fold_seed``, else ``seed``."""
        return self.seed if self.fold_seed is None else self.fold_seed

    def digest(self) -> str:
        """SHA-256 (hex) of :meth:`identity`: equal digests give equal stores."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- training


@dataclass(frozen=True, kw_only=True)
class TrainOptions(StageConfig):
    """The options every training stage shares (teacher, assistants, students)."""

    epochs: int = option(50, help="Training epochs.", ge=1)
    batch_size: int = option(8, help="Images per optimizer step.", ge=1)
    lr: float = option(1e-3, help="Peak learning rate.", gt=0)
    seed: int = _seed()
    fold: int | None = _fold()
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
    device: str = _device()
    force: bool = _force()
    progress: bool = _progress()


@dataclass(frozen=True, kw_only=True)
class TeacherConfig(TrainOptions):
    """Options of ``plc train-teacher``; ``data``/``out`` default from ``dataset``."""

    dataset: str = option(help="Dataset name (data/<name>.zarr).")
    data: Path | None = option(None, help="Dataset store path (default data/<dataset>.zarr).")
    out: Path | None = option(None, help="Checkpoint (default models/<dataset>/teacher.pt).")
    model: str = option("transunet", help="Registry name (see `plc models`).", choices=_models)
    init: Path | None = _init()

    @property
    def data_path(self) -> Path:
        return self.data or paths.data_path(self.dataset)

    @property
    def out_path(self) -> Path:
        return self.out or paths.teacher_path(self.dataset, self.fold)


@dataclass(frozen=True, kw_only=True)
class AssistantConfig(TrainOptions):
    """Options of ``plc train-assistant``. The assistant has the teacher's architecture."""

    dataset: str = option(help="Dataset name (data/<name>.zarr).")
    kind: str = option(help="false-pixel (FIG images) or boundary (BT images).", choices=KINDS)
    data: Path | None = option(None, help="Dataset store path (default data/<dataset>.zarr).")
    teacher: Path | None = option(
        None, help="Teacher checkpoint (default models/<dataset>/teacher.pt).", exists=True
    )
    out: Path | None = option(
        None, help="Checkpoint (default models/<dataset>/assistant_fp.pt or assistant_bd.pt)."
    )
    model: str | None = option(  # None: the teacher's architecture (paper: same as T)
        None, help="Registry name; default: the teacher's.", choices=_models
    )
    init: Path | None = _init()
    fig_queue_len: int = option(65536, help="FIG queue length M = N.", ge=1)
    fig_pixels_per_image: int = option(256, help="FIG pixels pushed per image (k).", ge=1)
    fig_real_fraction: float = option(0.0, help="Share of real images in FIG batches.", ge=0, lt=1)
    fig_fill_passes: int = option(5, help="Max passes to fill the FIG queues.", ge=1)
    bt_delta: int = option(5, help="BT band width δ in pixels at 224².", ge=1)
    bt_rho: float = option(1.0, help="BT swap ratio ρ.", gt=0, le=1)

    @property
    def data_path(self) -> Path:
        return self.data or paths.data_path(self.dataset)

    @property
    def teacher_path(self) -> Path:
        return self.teacher or paths.teacher_path(self.dataset, self.fold)

    @property
    def out_path(self) -> Path:
        return self.out or paths.assistant_path(self.dataset, self.kind, self.fold)


# --------------------------------------------------------------------------- precompute


@dataclass(frozen=True)
class PrecomputeConfig(StageConfig):
    """Options of ``plc precompute``; every path defaults from ``dataset``."""

    dataset: str = option(help="Dataset name (data/<name>.zarr).")
    data: Path | None = option(None, help="Dataset store path (default data/<dataset>.zarr).")
    teacher: Path | None = option(None, help="Teacher checkpoint.")
    assistant_fp: Path | None = option(None, help="False-pixel assistant checkpoint.")
    assistant_bd: Path | None = option(None, help="Boundary assistant checkpoint.")
    out: Path | None = option(None, help="Label store (default labels/<dataset>.zarr).")
    batch_size: int = option(16, help="Images per team forward.", ge=1)
    shard_size: int = option(64, help="Images per shard (the unit of writing).", ge=1)
    search_backend: str = option(
        "auto", help="SC nearest-neighbour search.", choices=_search_backends
    )
    sc_smoothing: float = option(0.1, help="ε of the last-resort smoothed one-hot.", ge=0, lt=0.5)
    gt_smoothing: float = option(
        0.1, help="ε of the gt_smooth control (label-smoothed GT).", ge=0, lt=0.5
    )
    bank_per_class: int = option(64, help="Correct pixels per image and class in the bank.", ge=1)
    sc_knn_k: int = option(8, help="Neighbours averaged by the plc_knn row.", ge=1)
    sc_confident_quantile: float = option(
        0.5,
        help="plc_confident searches only correct pixels whose GT-class probability is at "
        "least this quantile of the image's (0.5: the median).",
        ge=0,
        le=1,
    )
    seed: int = _seed()
    fold: int | None = _fold()
    workers: int = option(0, help="Dask LocalCluster workers (0: in-process).", ge=0, runtime=True)
    scheduler: str | None = option(
        None, help="Dask scheduler address tcp://host:port.", runtime=True
    )
    gpu: bool = option(
        False,
        help="Dask: each task requests resources={'GPU': 1}; start the workers with "
        "`dask worker --resources GPU=1` (one task per GPU at a time).",
        runtime=True,
    )
    task_timeout: float = option(
        600.0,
        help="Dask: seconds to wait for a worker able to run the tasks before failing.",
        gt=0,
        runtime=True,
    )
    cache_mb: int = option(
        4096,
        help="In-process: memory (MB) for pass-1 outputs of shards that wait for the "
        "cross-image bank; beyond it they are recomputed (Dask always recomputes).",
        ge=0,
        runtime=True,
    )
    resume: bool = option(
        False,
        help="Continue an interrupted run (<out>.writing) from its pending shards.",
        runtime=True,
    )
    device: str = _device()
    force: bool = _force()
    progress: bool = _progress()

    def problems(self) -> list[str]:
        out = []
        if self.gpu and not (self.scheduler or self.workers):
            out.append("--gpu requests Dask resources: use it with --scheduler or --workers.")
        if self.resume and self.force:
            out.append("--resume continues a run and --force starts over: pass only one.")
        return out

    def inputs(self) -> dict[str, Path]:
        """The four input artifacts with their conventional defaults."""
        ds, f = self.dataset, self.fold
        return {
            "data": self.data or paths.data_path(ds),
            "teacher": self.teacher or paths.teacher_path(ds, f),
            "assistant_fp": self.assistant_fp or paths.assistant_path(ds, "false-pixel", f),
            "assistant_bd": self.assistant_bd or paths.assistant_path(ds, "boundary", f),
        }

    @property
    def out_path(self) -> Path:
        return self.out or paths.labels_path(self.dataset, self.fold)


# --------------------------------------------------------------------------- students


@dataclass(frozen=True, kw_only=True)
class DistillConfig(TrainOptions):
    """Options of ``plc distill``. ``variant='none'`` is the no-KD baseline."""

    # str, not Path: a store may be an http(s):// or other fsspec URL (read-only)
    labels: str = option(help="Label store: a path or URL (labels/<dataset>.zarr).", exists=True)
    out: Path = option(help="Run folder (runs/<exp>).")
    data: str | None = option(
        None, help="Dataset store (path or URL); default from the label store.", exists=True
    )
    variant: str = option(
        "plc",
        help="Label variant to distill ('none': the student alone).",
        choices=DISTILL_CHOICES,  # the variant table (pipeline.variants is torch-free)
    )
    loss: str = option("kd", help="Response loss.", choices=LOSSES)
    student: str = option("unet", help="Registry name (see `plc models`).", choices=_models)
    lam: float = option(1.0, help="Weight λ of the KD term.", flag="--lambda", ge=0)
    tau: float = option(1.0, help="Temperature τ.", gt=0)
    live: bool = option(False, help="Compute labels with the team every step.")
    kd_pixels: str = option(
        "all",
        help="Pixels that carry the KD term: 'all', or 'correct' (only where the variant's "
        "argmax equals the GT, normalised by their count; L_Seg stays on every pixel). "
        "'correct' with 'teacher' is the masked control; with an all-correct variant it "
        "changes nothing. --loss kd only.",
        choices=("all", "correct"),
    )
    train_fraction: float = option(
        1.0,
        help="Share of the train split the student sees: seeded and stratified by empty masks "
        "as the folds are, nested (a smaller share's images lie inside a larger one's), the same for "
        "every variant and seed; the held-out val images stay out of it. The team keeps the "
        "whole fold.",
        gt=0,
        le=1,
    )
    num_workers: int = option(
        2,
        help="DataLoader worker processes reading the stores (0: read in the training "
        "process); measured in BENCHMARKS.md.",
        ge=0,
        runtime=True,
    )
    preload_mb: int = option(
        512,
        help="Hold the train split (images, masks and the variant's codes) in memory when it "
        "needs at most this many MB, read once per process (each worker holds a copy); "
        "larger splits stream batch by batch. 0: always stream. Same batches either way.",
        ge=0,
        runtime=True,
    )

    def problems(self) -> list[str]:
        found = []
        if self.live and self.variant == "none":
            found.append(
                "--live needs a --variant other than 'none' (the baseline uses no labels)."
            )
        if self.kd_pixels == "correct" and self.loss != "kd":
            found.append(
                "--kd-pixels correct masks the pixel-wise KD term: use it with --loss kd "
                f"(got --loss {self.loss})."
            )
        if self.kd_pixels == "correct" and self.variant == "none":
            found.append("--kd-pixels correct needs a --variant other than 'none' (no KD term).")
        return found


@dataclass(frozen=True)
class EvaluateConfig(StageConfig):
    """Options of ``plc evaluate``."""

    checkpoint: Path = option(help="Any plc-kd checkpoint.", exists=True)
    data: str = option(help="Dataset store: a path or URL.", exists=True)
    split: str = option("test", help="Split to evaluate.", choices=SPLITS)
    fold: int | None = _fold()
    out: Path | None = option(None, help="Metrics JSON path (default beside the checkpoint).")
    batch_size: int = option(16, help="Images per forward.", ge=1)
    device: str = _device()


# --------------------------------------------------------------------------- reporting


@dataclass(frozen=True)
class ReportConfig(StageConfig):
    """Options of ``plc report``."""

    runs: Path = option(
        help="Folder of runs (each with metrics.json), e.g. runs/<ds>.", exists=True
    )
    out: Path = option(help="Markdown report path (PNG figures are written beside it).")
    labels: Path | None = option(
        None,
        help="Label store, or a folder of label stores (one per fold), for label quality.",
        exists=True,
    )
    teacher_metrics: Path | None = option(
        None,
        help="Teacher metrics JSON, or a folder searched for every teacher.metrics.json (one "
        "per fold, e.g. models/<ds>) for the teacher–student gap.",
        exists=True,
    )
    bootstrap: int = option(2000, help="Resamples of the image-level paired bootstrap.", ge=100)


@dataclass(frozen=True)
class InspectConfig(StageConfig):
    """Options of ``plc inspect``."""

    labels: str = option(help="Label store: a path or URL.", argument=True, exists=True)
    image: str = option(help="Image id (or its index in the store).")
    out: Path = option(help="PNG path.")
    data: str | None = option(
        None, help="Dataset store (path or URL); default from the label store.", exists=True
    )
    tile: int = option(192, help="Side of each panel tile in pixels.", ge=32, le=1024)
