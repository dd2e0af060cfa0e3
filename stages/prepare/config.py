"""Options of ``plc prepare`` (declared once; see :mod:`stages.configs`)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from stages import paths
from stages.configs import progress_option, seed_option
from stages.options import StageConfig, option

_STORE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")  # storage_schema's rule for a store name


def _layouts() -> list[str]:
    from stages.prepare.readers import LAYOUTS

    return list(LAYOUTS)


@dataclass(frozen=True)
class PrepareConfig(StageConfig):
    """What ``plc prepare`` builds (see the README's "Datasets" for each layout)."""

    dataset: str = option(help="Layout of the raw dataset.", choices=_layouts)
    out: Path | None = option(None, help="Store path (default data/<dataset>.zarr).")
    root: Path | None = option(None, help="Root folder of the raw dataset.")
    size: int = option(224, help="Side of the square images, a multiple of 16.", ge=32, le=2048)
    split: float = option(0.8, help="Train fraction where the layout has no split.", gt=0, lt=1)
    seed: int = seed_option()
    chunk_images: int = option(
        1,
        help="Images per inner chunk of the store's arrays (divides the shard size, 64). 1: any "
        "image is read alone; 4-16: contiguous runs (distill --shuffle block) read faster, a "
        "lone image costs its whole chunk, a corrupt chunk names all its images "
        "(BENCHMARKS.md §10).",
        ge=1,
    )
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
    progress: bool = progress_option()

    def __post_init__(self) -> None:
        if self.out is None:
            object.__setattr__(self, "out", paths.data_path(self.dataset))
        super().__post_init__()

    def problems(self) -> list[str]:
        from stages.prepare.readers import LAYOUTS

        layout = LAYOUTS[self.dataset]
        out: list[str] = []
        if self.size % 16:
            out.append(f"--size must be a multiple of 16 between 32 and 2048, got {self.size}.")
        if 64 % self.chunk_images:
            out.append(
                f"--chunk-images must divide the shard size 64 (1, 2, 4, 8, 16, 32 or 64), got "
                f"{self.chunk_images}."
            )
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
        from stages.prepare.readers import LAYOUTS

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
        from stages.prepare.readers import parse_classes

        try:
            parse_classes(self.classes)
        except ValueError as err:
            return [str(err)]
        return []

    def class_names(self) -> tuple[str, ...]:
        """The store's class names: from --classes, the synthetic count, or the layout."""
        from stages.prepare.readers import LAYOUTS, parse_classes

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
        from stages.prepare.readers import LAYOUTS

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
            **({"chunk_images": self.chunk_images} if self.chunk_images != 1 else {}),
        }

    def _naming_and_classes(self) -> dict:
        from stages.prepare.readers import parse_classes

        return {
            "mask_suffix": self.mask_suffix,
            "image_suffix": self.image_suffix,
            "images": self.images,
            "masks": self.masks,
            "classes": parse_classes(self.classes).spec() if self.classes else None,
            "synthetic_classes": self.synthetic_classes,
        }

    def naming(self):
        """The readers' :class:`~stages.prepare.readers.Naming` of these options."""
        from stages.prepare.readers import Naming

        return Naming(self.image_suffix, self.mask_suffix, self.images, self.masks)

    @property
    def fold_seed_value(self) -> int:
        """The seed of the fold assignment: ``fold_seed``, else ``seed``."""
        return self.seed if self.fold_seed is None else self.fold_seed

    def digest(self) -> str:
        """SHA-256 (hex) of :meth:`identity`: equal digests give equal stores."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()
