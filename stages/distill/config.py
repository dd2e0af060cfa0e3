"""Options of ``plc distill`` (declared once)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.kd_table import LOSS_NAMES, get_loss, help_text
from pipeline.variants import DISTILL_CHOICES, NO_KD
from stages.configs import TrainOptions, model_choices
from stages.options import option


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
    loss: str = option("kd", help=help_text(), choices=LOSS_NAMES)  # pipeline.kd_table
    plus_kd: bool = option(
        False,
        help="With a teacher loss (fitnet, at, emkd, pa, ifvd, cirkd, spkd): add λ · KD on "
        "--variant's stored labels (the paper's Table 1 and the reference scripts do).",
    )
    kd_weight: float | None = option(
        None,
        help="Weight of a teacher loss's term; default the table's (shown with --loss).",
        ge=0,
    )
    taps: str | None = option(
        None,
        help="Student feature taps a teacher loss reads, comma-separated (see the model's "
        "taps); default the model's kd_taps (UNet: dec2; EMKD: bottleneck,dec2).",
    )
    teacher_taps: str | None = option(
        None, help="Teacher feature taps, as --taps (default the teacher's kd_taps)."
    )
    teacher: Path | None = option(
        None,
        help="Teacher checkpoint for a teacher loss; default the one the label store's "
        "provenance names.",
        exists=True,
    )
    dkd_alpha: float = option(1.0, help="DKD: weight α of TCKD (mdistiller: 1).", ge=0)
    dkd_beta: float = option(8.0, help="DKD: weight β of NCKD (mdistiller: 8).", ge=0)
    dist_beta: float = option(1.0, help="DIST: weight β of the inter-class term.", ge=0)
    dist_gamma: float = option(1.0, help="DIST: weight γ of the intra-class term.", ge=0)
    student: str = option("unet", help="Registry name (see `plc models`).", choices=model_choices)
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
    shuffle: str = option(
        "full",
        help="Order of the images within an epoch: 'full' (a random permutation) or 'block' "
        "(contiguous blocks of --shuffle-block images in random order, images shuffled "
        "within windows of --shuffle-window blocks: each window is a few contiguous reads; "
        "needs --steps-per-epoch > 0 and --foreground-fraction 0). Both paired: the same "
        "batches for every variant of a seed.",
        choices=("full", "block"),
    )
    shuffle_block: int = option(16, help="--shuffle block: images per block.", ge=1)
    shuffle_window: int = option(
        4, help="--shuffle block: blocks whose images are shuffled together.", ge=1
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

    @property
    def live_loss(self) -> bool:
        """Whether the loss reads the live teacher (its row's ``reads``)."""
        return get_loss(self.loss).reads == "teacher"

    @property
    def reads_labels(self) -> bool:
        """Whether the run reads --variant's stored labels (a stored loss, or --plus-kd)."""
        return self.variant != NO_KD and (not self.live_loss or self.plus_kd)

    def problems(self) -> list[str]:
        found = []
        if self.plus_kd and not self.live_loss:
            found.append(
                f"--plus-kd adds KD to a teacher loss; --loss {self.loss} already reads the "
                "stored labels (drop --plus-kd)."
            )
        if self.plus_kd and self.variant == "none":
            found.append("--plus-kd needs a --variant other than 'none' (its KD labels).")
        for flag, value in (
            ("--taps", self.taps),
            ("--teacher-taps", self.teacher_taps),
            ("--kd-weight", self.kd_weight),
            ("--teacher", self.teacher),
        ):
            if value is not None and not self.live_loss:
                found.append(f"{flag} is for a teacher loss (got --loss {self.loss}).")
        if self.live and self.live_loss and not self.plus_kd:
            found.append(
                "--live computes stored labels live: a teacher loss reads none without --plus-kd."
            )
        if self.live and self.variant == NO_KD:
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
        if self.shuffle == "block" and (self.steps_per_epoch == 0 or self.foreground_fraction):
            found.append(
                "--shuffle block draws uniformly in fixed steps: use it with --steps-per-epoch "
                "> 0 and --foreground-fraction 0."
            )
        return found
