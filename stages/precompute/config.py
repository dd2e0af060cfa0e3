"""Options of ``plc precompute`` (declared once)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stages import paths
from stages.configs import (
    device_option,
    fold_option,
    force_option,
    progress_option,
    seed_option,
)
from stages.options import StageConfig, option

# whose last decoder map SC reads when the teacher gives no features (the first: default)
SC_FEATURES: tuple[str, ...] = ("assistant-false-pixel", "assistant-boundary", "both")


def _search_backends() -> list[str]:
    from pipeline.search import BACKENDS

    return list(BACKENDS)


@dataclass(frozen=True)
class PrecomputeConfig(StageConfig):
    """Options of ``plc precompute``; every path defaults from ``dataset``."""

    dataset: str = option(help="Dataset name (data/<name>.zarr).")
    data: Path | None = option(None, help="Dataset store path (default data/<dataset>.zarr).")
    teacher: Path | None = option(
        None,
        help="Teacher (default models/<dataset>/teacher.pt): a plc-kd checkpoint, a "
        "TorchScript file (torch.jit.save) mapping (B, 3, H, W) float RGB in [0, 1] to logits "
        "(B, C, H, W) or (logits, features), or the folder of `plc import-teacher` "
        "(imported probability maps); without features SC uses an assistant's "
        "(--sc-features).",
    )
    sc_features: str | None = option(
        None,
        help="Whose last decoder map SC searches when the teacher gives none (an imported "
        "teacher, a TorchScript one returning logits only): assistant-false-pixel (TA_f, "
        "the default), assistant-boundary (TA_b) or both (each L2-normalised, concatenated). "
        "Refused with a teacher that gives features.",
        choices=SC_FEATURES,
    )
    assistant_fp: Path | None = option(None, help="False-pixel assistant checkpoint.")
    assistant_bd: Path | None = option(None, help="Boundary assistant checkpoint.")
    out: Path | None = option(None, help="Label store (default labels/<dataset>.zarr).")
    batch_size: int = option(16, help="Images per team forward.", ge=1)
    shard_size: int = option(64, help="Images per shard (the unit of writing).", ge=1)
    chunk_images: int = option(
        1,
        help="Images per inner chunk of the store's arrays (divides --shard-size). 1: any "
        "image is read alone; 4-16: contiguous runs (distill --shuffle block) read faster, a "
        "lone image costs its whole chunk, a corrupt chunk names all its images "
        "(BENCHMARKS.md §10).",
        ge=1,
    )
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
    seed: int = seed_option()
    fold: int | None = fold_option()
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
    device: str = device_option()
    force: bool = force_option()
    progress: bool = progress_option()

    def problems(self) -> list[str]:
        out = []
        if self.gpu and not (self.scheduler or self.workers):
            out.append("--gpu requests Dask resources: use it with --scheduler or --workers.")
        if self.resume and self.force:
            out.append("--resume continues a run and --force starts over: pass only one.")
        if self.shard_size % self.chunk_images:
            out.append(
                f"--chunk-images {self.chunk_images} must divide --shard-size "
                f"{self.shard_size}: a shard holds whole chunks."
            )
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
