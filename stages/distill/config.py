"""Options of ``plc distill`` (declared once)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.variants import DISTILL_CHOICES
from stages.configs import LOSSES, TrainOptions, model_choices
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
    loss: str = option(
        "kd",
        help="Response loss on the stored labels: kd (pixel-wise KL), cwd (channel-wise), dkd "
        "(decoupled KD: TCKD + NCKD; in binary segmentation NCKD is identically 0, so dkd is "
        "--dkd-alpha x kd), dist (DIST's inter- and intra-class Pearson terms; in binary "
        "segmentation the inter-class term is a constant sign, only the intra-class term "
        "trains).",
        choices=LOSSES,
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
        if self.shuffle == "block" and (self.steps_per_epoch == 0 or self.foreground_fraction):
            found.append(
                "--shuffle block draws uniformly in fixed steps: use it with --steps-per-epoch "
                "> 0 and --foreground-fraction 0."
            )
        return found
