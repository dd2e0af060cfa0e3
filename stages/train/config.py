"""Options of ``plc train-teacher`` and ``plc train-assistant`` (declared once)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stages import paths
from stages.configs import (
    KINDS,
    TrainOptions,
    init_option,
    model_choices,
    option,
)


@dataclass(frozen=True, kw_only=True)
class TeacherConfig(TrainOptions):
    """Options of ``plc train-teacher``; ``data``/``out`` default from ``dataset``."""

    dataset: str = option(help="Dataset name (data/<name>.zarr).")
    data: Path | None = option(None, help="Dataset store path (default data/<dataset>.zarr).")
    out: Path | None = option(None, help="Checkpoint (default models/<dataset>/teacher.pt).")
    model: str = option(
        "transunet", help="Registry name (see `plc models`).", choices=model_choices
    )
    init: Path | None = init_option()

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
        None,
        help="Teacher (default models/<dataset>/teacher.pt): a plc-kd checkpoint, a "
        "TorchScript file (torch.jit.save) mapping (B, 3, H, W) float RGB in [0, 1] to logits "
        "(B, C, H, W) or (logits, features), or the folder of `plc import-teacher` "
        "(imported probability maps); a TorchScript or imported teacher needs --model.",
        exists=True,
    )
    out: Path | None = option(
        None, help="Checkpoint (default models/<dataset>/assistant_fp.pt or assistant_bd.pt)."
    )
    model: str | None = option(  # None: the teacher's architecture (paper: same as T)
        None,
        help="Registry name; default: the teacher's (required with a TorchScript or imported "
        "teacher).",
        choices=model_choices,
    )
    init: Path | None = init_option()
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
