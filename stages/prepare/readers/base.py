"""What every raw-layout reader returns: pairs, problems, and the one error type."""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from stages.errors import UserError

logger = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the raw dataset: the file (or folder) and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class DatasetError(UserError):
    """A raw dataset that cannot be prepared; the message lists every problem, one per line."""

    def __init__(self, header: str, problems: Sequence[Problem] = ()) -> None:
        self.problems: list[Problem] = list(problems)
        lines = [header, *(f"  - {p}" for p in self.problems)]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class RawPair:
    """One image of a raw dataset and where its mask is.

    Attributes:
        id: unique id within the dataset (file stem, prefixed for negatives).
        image_path: absolute path of the image file.
        mask_path: absolute path of the mask file; None only for a negative without a mask
            (its mask is all background).
        split: the dataset's official split, or None where it has none (a seeded split is
            drawn later).
        negative: an image known to contain no lesion (its mask must be empty).
    """

    id: str
    image_path: Path
    mask_path: Path | None
    split: Split | None = None
    negative: bool = False


@dataclass
class Listing:
    """The pairs a layout found under ``root`` and the problems it met doing so.

    ``hint`` is one line for the top of the error when nothing paired (which option
    would pair the files), or None.
    """

    root: Path
    pairs: list[RawPair] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    hint: str | None = None

    def extend(self, other: Listing) -> None:
        """Append another listing's pairs and problems (same root); the first hint wins."""
        self.pairs += other.pairs
        self.problems += other.problems
        self.hint = self.hint or other.hint


def image_files(folder: Path) -> tuple[dict[str, Path], list[Problem]]:
    """Map file stem → path for the image files directly in ``folder``.

    Hidden files, folders and files of other types (``.txt``, ``Thumbs.db``) are skipped;
    two image files with the same stem are a problem (which one is meant is ambiguous), and
    so is an image name that is no regular file (a broken symlink, a symlink loop, a FIFO
    or a device: reading one would fail or never end). A folder that cannot be listed is
    one problem.
    """
    found: dict[str, Path] = {}
    problems: list[Problem] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        return found, [Problem(folder, f"cannot list folder ({err.strerror or err})")]
    for path in entries:
        if path.name.startswith("."):
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            logger.debug("skipping %s: not an image file", path)
            continue
        kind, reason = entry_kind(path)
        if kind == "dir":
            logger.debug("skipping %s: a folder", path)
            continue
        if reason is not None:
            problems.append(Problem(path, reason))
            continue
        if path.stem in found:
            problems.append(
                Problem(path, f"has the same stem as {found[path.stem].name}; keep only one")
            )
            continue
        found[path.stem] = path
    return found, problems


def entry_kind(path: Path) -> tuple[Literal["file", "dir", "other"], str | None]:
    """What ``path`` is once symlinks are followed, and why it cannot be read (or None).

    Returns:
        ``("file", None)`` for a regular file, ``("dir", None)`` for a folder, else
        ``("other", reason)``: a symlink loop, a broken symlink, a FIFO, socket or device.
    """
    try:
        mode = path.stat().st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "other", "symlink loop; point the link at a real file or remove it"
        if path.is_symlink():
            return "other", f"broken symlink (its target {os.readlink(path)} does not exist)"
        return "other", f"cannot be inspected ({err.strerror or err})"
    if stat.S_ISREG(mode):
        return "file", None
    if stat.S_ISDIR(mode):
        return "dir", None
    return "other", "not a regular file (a FIFO, socket or device); replace it with a file"


def require_dir(path: Path, what: str) -> Problem | None:
    """A problem naming ``path`` unless it is a directory (saying why, for a bad symlink)."""
    kind, reason = entry_kind(path)
    if kind == "dir":
        return None
    if kind == "other" and path.is_symlink():
        return Problem(path, f"{what} folder is a {reason}")
    return Problem(path, f"missing {what} folder")


def pair_folders(
    root: Path,
    images_dir: Path,
    masks_dir: Path,
    *,
    mask_stem: Callable[[str], str] = lambda stem: stem,
    split: Split | None = None,
    id_prefix: str = "",
) -> Listing:
    """Pair the images in ``images_dir`` with the masks in ``masks_dir`` by file stem.

    Args:
        root: the dataset root (kept on the listing).
        images_dir: folder of image files.
        masks_dir: folder of mask files.
        mask_stem: the mask's stem for an image stem (e.g. ``s + "_segmentation"``).
        split: official split of every pair here, or None.
        id_prefix: prepended to each id (keeps ids unique across folders).

    Returns:
        The pairs sorted by id; every image without a mask and every mask without an image
        is a problem. A missing or empty folder is one problem.
    """
    listing = Listing(root)
    missing = [p for p in (require_dir(images_dir, "images"), require_dir(masks_dir, "masks")) if p]
    if missing:
        listing.problems += missing
        return listing
    images, problems = image_files(images_dir)
    masks, mask_problems = image_files(masks_dir)
    listing.problems += problems + mask_problems
    if not images and not problems:
        listing.problems.append(Problem(images_dir, "no image files (" + _suffixes() + ")"))
    expected = {mask_stem(stem): stem for stem in images}
    for stem, path in images.items():
        mask = masks.get(mask_stem(stem))
        if mask is None:
            listing.problems.append(
                Problem(path, f"image has no mask (expected {masks_dir / mask_stem(stem)}.*)")
            )
        else:
            listing.pairs.append(RawPair(id_prefix + stem, path, mask, split))
    for stem, path in masks.items():
        if stem not in expected:
            listing.problems.append(Problem(path, "mask has no image"))
    return listing


def _suffixes() -> str:
    return ", ".join(IMAGE_SUFFIXES)


def first_dir(candidates: Iterable[Path]) -> Path | None:
    """The first of ``candidates`` that is a directory, or None."""
    return next((c for c in candidates if c.is_dir()), None)
