"""Options of ``plc import-teacher`` (declared once)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stages import paths
from stages.configs import fold_option, force_option, progress_option
from stages.options import StageConfig, option

LAYOUTS: tuple[str, ...] = ("auto", "nnunet", "arrays", "png")
KINDS: tuple[str, ...] = ("probabilities", "logits")
SUM_TOLERANCE = 0.01  # float16 maps of up to ~20 classes (nnU-Net's) stay within it


@dataclass(frozen=True)
class ImportTeacherConfig(StageConfig):
    """Options of ``plc import-teacher``; ``data``/``out`` default from ``dataset``."""

    dataset: str = option(help="Dataset name (data/<name>.zarr).")
    probs: Path = option(
        help="Folder of the teacher's maps, one file per image: nnU-Net v2's "
        "--save_probabilities output (<case>.npz with 'probabilities' (C, 1, H, W) or "
        "(C, H, W), beside <case>.pkl), <id>.npy / <id>.npz arrays (C, H, W), or 8/16-bit "
        "PNGs of p(foreground) (binary tasks); at the images' original size or the store's.",
        exists=True,
    )
    data: Path | None = option(None, help="Dataset store path (default data/<dataset>.zarr).")
    out: Path | None = option(
        None,
        help="Imported teacher folder (default models/<dataset>/teacher.pt, where "
        "train-assistant and precompute look for the teacher).",
    )
    layout: str = option(
        "auto",
        help="How the folder is written: nnunet (.npz + .pkl pairs), arrays (.npy/.npz), png; "
        "auto: nnunet when an .npz has its .pkl, else the one of arrays or png present.",
        choices=LAYOUTS,
    )
    kind: str = option(
        "probabilities",
        help="What the arrays hold: probabilities (each pixel sums to 1) or logits (softmax "
        "applied here); nnU-Net and PNG maps are probabilities.",
        choices=KINDS,
    )
    map_suffix: str = option(
        "",
        help="Removed from the end of a map's file stem to give its image id (as prepare's "
        "--image-suffix): maps <id>_probs.npy pair with the manifest's ids via --map-suffix "
        "_probs.",
    )
    fold: int | None = fold_option()
    force: bool = force_option()
    progress: bool = progress_option()

    def problems(self) -> list[str]:
        out = []
        if not self.probs.is_dir():
            out.append(f"--probs {self.probs} is not a folder; pass the folder of the maps.")
        if self.kind == "logits" and self.layout in ("nnunet", "png"):
            out.append(f"--kind logits is only for --layout arrays: {self.layout} maps hold "
                       "probabilities.")  # fmt: skip
        return out

    @property
    def data_path(self) -> Path:
        return self.data or paths.data_path(self.dataset)

    @property
    def out_path(self) -> Path:
        return self.out or paths.teacher_path(self.dataset, self.fold)
