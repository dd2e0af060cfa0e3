"""Readers of the raw dataset layouts that ``prepare`` turns into a dataset store.

``LAYOUTS`` is the registry (a literal dict): each :class:`Layout` lists a root's
(id, image, mask, official split) pairs and the problems it meets. ``synthetic`` has no
files: ``prepare`` generates it with ``pipeline.synthetic``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.readers.base import (
    IMAGE_SUFFIXES,
    DatasetError,
    Listing,
    Problem,
    RawPair,
    Split,
)
from stages.readers.layouts import (
    list_cvc,
    list_folder,
    list_folder_negatives,
    list_idrid,
    list_isic,
    list_kvasir,
)
from stages.readers.pairs import LoadedPair, load_pair

logger = logging.getLogger(__name__)

LESION_CLASSES: tuple[str, ...] = ("background", "lesion")


@dataclass(frozen=True)
class Layout:
    """One raw dataset layout.

    Attributes:
        name: the registry key.
        lister: maps a root to its pairs and problems; None for generated data.
        negatives: lists the optional no-lesion images (``include_negatives``), if any.
        classes: class names, index = class id in the masks.
        official_split: whether the layout carries its own split.
    """

    name: str
    lister: Callable[[Path], Listing] | None
    negatives: Callable[[Path], Listing] | None = None
    classes: tuple[str, ...] = LESION_CLASSES
    official_split: bool = False

    @property
    def needs_root(self) -> bool:
        """Whether the layout reads files (everything but ``synthetic``)."""
        return self.lister is not None

    def scan(self, root: Path, include_negatives: bool = False) -> Listing:
        """List ``root``'s pairs and problems (an empty listing is itself a problem).

        Raises:
            DatasetError: for a generated layout, a missing root, or negatives asked of a
                layout without them.
        """
        if self.lister is None:
            raise DatasetError(f"layout '{self.name}' is generated and has no files to list.")
        if not root.is_dir():
            raise DatasetError(f"dataset root {root} is not a folder; pass the dataset's root.")
        if include_negatives and self.negatives is None:
            raise DatasetError(
                f"layout '{self.name}' has no negatives; include_negatives is only for: "
                + ", ".join(n for n, lay in LAYOUTS.items() if lay.negatives)
            )
        listing = self.lister(root)
        if include_negatives and self.negatives is not None:
            listing.extend(self.negatives(root))
        elif self.negatives is not None and (left_out := len(self.negatives(root).pairs)):
            logger.info("%s: %d negative images left out (include_negatives=False)", root, left_out)
        if not listing.pairs and not listing.problems:
            listing.problems.append(Problem(root, f"no image/mask pairs for layout '{self.name}'"))
        return listing


LAYOUTS: dict[str, Layout] = {
    "synthetic": Layout("synthetic", None),
    "folder": Layout("folder", list_folder, negatives=list_folder_negatives),
    "kvasir": Layout("kvasir", list_kvasir),
    "cvc": Layout("cvc", list_cvc, official_split=True),
    "isic": Layout("isic", list_isic),
    "idrid": Layout("idrid", list_idrid, classes=("background", "optic_disc"), official_split=True),
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
    "DatasetError",
    "Layout",
    "Listing",
    "LoadedPair",
    "Problem",
    "RawPair",
    "Split",
    "get_layout",
    "load_pair",
    "seeded_split",
]
