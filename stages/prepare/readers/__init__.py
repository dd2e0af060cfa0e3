"""Readers of the raw dataset layouts that ``prepare`` turns into a dataset store.

``LAYOUTS`` is the registry (a literal dict): each :class:`Layout` lists a root's
(id, image, mask, official split) pairs and the problems it meets. ``synthetic`` has no
files: ``prepare`` generates it with ``pipeline.synthetic``. ``folder`` and ``glob`` take
file-naming options (:class:`Naming`: suffixes, globs; pairing rule in
``stages.prepare.readers.naming``); any file layout takes a multi-class map
(:class:`ClassMap`, ``stages.prepare.readers.classes``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.prepare.readers.base import (
    IMAGE_SUFFIXES,
    DatasetError,
    Listing,
    Problem,
    RawPair,
    Split,
)
from stages.prepare.readers.classes import ClassMap, parse_classes
from stages.prepare.readers.layouts import (
    list_cvc,
    list_folder,
    list_folder_negatives,
    list_glob,
    list_idrid,
    list_isic,
    list_kvasir,
)
from stages.prepare.readers.naming import Naming
from stages.prepare.readers.pairs import LoadedPair, load_pair

logger = logging.getLogger(__name__)

LESION_CLASSES: tuple[str, ...] = ("background", "lesion")
Lister = Callable[[Path, Naming], Listing]
SUFFIX_OPTIONS = ("image_suffix", "mask_suffix")
GLOB_OPTIONS = ("images", "masks")


def _fixed(lister: Callable[[Path], Listing]) -> Lister:
    """A lister of a published tree, whose names are fixed (it takes no naming options)."""
    return lambda root, _naming: lister(root)


@dataclass(frozen=True)
class Layout:
    """One raw dataset layout.

    Attributes:
        name: the registry key.
        lister: maps a root and naming options to its pairs and problems; None for
            generated data.
        negatives: lists the optional no-lesion images (``include_negatives``), if any.
        classes: class names, index = class id in the masks (without a class map).
        official_split: whether the layout carries its own split.
        naming: the :class:`Naming` fields the layout takes (others must stay unset).
    """

    name: str
    lister: Lister | None
    negatives: Lister | None = None
    classes: tuple[str, ...] = LESION_CLASSES
    official_split: bool = False
    naming: tuple[str, ...] = ()

    @property
    def needs_root(self) -> bool:
        """Whether the layout reads files (everything but ``synthetic``)."""
        return self.lister is not None

    def scan(
        self, root: Path, include_negatives: bool = False, naming: Naming = Naming()
    ) -> Listing:
        """List ``root``'s pairs and problems (an empty listing is itself a problem).

        Raises:
            DatasetError: for a generated layout, a missing root, negatives asked of a
                layout without them, or naming options the layout does not take.
        """
        unused = [f for f in (*SUFFIX_OPTIONS, *GLOB_OPTIONS)
                  if getattr(naming, f) not in ("", None) and f not in self.naming]  # fmt: skip
        if unused:
            raise DatasetError(f"layout '{self.name}' does not take naming option(s) {unused}.")
        if self.lister is None:
            raise DatasetError(f"layout '{self.name}' is generated and has no files to list.")
        if not root.is_dir():
            raise DatasetError(f"dataset root {root} is not a folder; pass the dataset's root.")
        if include_negatives and self.negatives is None:
            raise DatasetError(
                f"layout '{self.name}' has no negatives; include_negatives is only for: "
                + ", ".join(n for n, lay in LAYOUTS.items() if lay.negatives)
            )
        listing = self.lister(root, naming)
        if include_negatives and self.negatives is not None:
            listing.extend(self.negatives(root, naming))
        elif self.negatives is not None and (left_out := len(self.negatives(root, naming).pairs)):
            logger.info("%s: %d negative images left out (include_negatives=False)", root, left_out)
        if listing.pairs:
            listing.hint = None  # something paired: the per-file problems say the rest
        if not listing.pairs and not listing.problems:
            listing.problems.append(Problem(root, f"no image/mask pairs for layout '{self.name}'"))
        return listing


LAYOUTS: dict[str, Layout] = {
    "synthetic": Layout("synthetic", None),
    "folder": Layout("folder", list_folder, negatives=list_folder_negatives, naming=SUFFIX_OPTIONS),
    "kvasir": Layout("kvasir", _fixed(list_kvasir)),
    "cvc": Layout("cvc", _fixed(list_cvc), official_split=True),
    "isic": Layout("isic", _fixed(list_isic)),
    "idrid": Layout(
        "idrid", _fixed(list_idrid), classes=("background", "optic_disc"), official_split=True
    ),
    "glob": Layout("glob", list_glob, naming=SUFFIX_OPTIONS + GLOB_OPTIONS),
}


def get_layout(name: str) -> Layout:
    """The layout called ``name``; a miss raises DatasetError listing the choices."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise DatasetError(
            f"unknown dataset layout {name!r}; choose one of: {', '.join(LAYOUTS)}."
        ) from None


def seeded_split(pairs: Sequence[RawPair], fraction: float, seed: int) -> list[Split]:
    """Each pair's split: its official one, else a seeded train/test draw.

    Pairs without an official split are split per stratum (lesion images, negatives) so
    both keep the train fraction: ``round(fraction * n)`` of each go to ``train`` (at least
    one to each side when a stratum has two or more), the rest to ``test``.

    Args:
        pairs: in store order.
        fraction: train fraction in (0, 1).
        seed: the split's seed; the same pairs and seed give the same split.

    Returns:
        One split name per pair, in order.
    """
    splits: list[Split | None] = [p.split for p in pairs]
    rng = np.random.default_rng(seed)
    for negative in (False, True):
        todo = [i for i, p in enumerate(pairs) if p.split is None and p.negative == negative]
        n = len(todo)
        n_train = min(max(round(fraction * n), 1), n - 1) if n >= 2 else n
        chosen = set(rng.permutation(n)[:n_train].tolist())
        for rank, index in enumerate(todo):
            splits[index] = "train" if rank in chosen else "test"
    return [s for s in splits if s is not None]


__all__ = [
    "IMAGE_SUFFIXES",
    "LAYOUTS",
    "ClassMap",
    "DatasetError",
    "Layout",
    "Listing",
    "LoadedPair",
    "Naming",
    "Problem",
    "RawPair",
    "Split",
    "get_layout",
    "load_pair",
    "parse_classes",
    "seeded_split",
]
