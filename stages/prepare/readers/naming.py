"""How images and masks pair up by name, and what to suggest when nothing pairs.

Pairing rule (``folder`` and ``glob`` layouts): an image's **key** is its file stem with
``--image-suffix`` removed from the end, a mask's key is its stem with ``--mask-suffix``
removed; an image pairs with the mask of the same key, and the key is the image's id.
``IMD002.bmp`` + ``IMD002_lesion.bmp`` pair with ``--mask-suffix _lesion`` (key
``IMD002``); ``21_training.tif`` + ``21_manual1.gif`` with ``--image-suffix _training
--mask-suffix _manual1`` (key ``21``). The extension never matters.

When nothing pairs, :func:`suggest_naming` looks for the suffixes that would pair most
files and names the options that set them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stages.prepare.readers.base import IMAGE_SUFFIXES, Listing, Problem, RawPair, Split, entry_kind

logger = logging.getLogger(__name__)

_SEPARATORS = "_-. "
_MIN_SHARE = 0.5  # a suggestion must pair at least this share of the smaller side


@dataclass(frozen=True)
class Naming:
    """File-naming options of the ``folder`` and ``glob`` layouts.

    Attributes:
        image_suffix: removed from the end of an image stem to give its key.
        mask_suffix: removed from the end of a mask stem to give its key.
        images: glob of the image files relative to the root (``glob`` layout).
        masks: glob of the mask files relative to the root (``glob`` layout).
    """

    image_suffix: str = ""
    mask_suffix: str = ""
    images: str | None = None
    masks: str | None = None


def keyed(
    files: list[Path], suffix: str, kind: str, option: str
) -> tuple[dict[str, Path], list[Problem]]:
    """Map key → path for ``files``: the file stem with ``suffix`` removed.

    A stem without the suffix, an empty key, or two files of one key are problems.
    """
    found: dict[str, Path] = {}
    problems: list[Problem] = []
    for path in files:
        stem = path.stem
        if suffix and not stem.endswith(suffix):
            problems.append(Problem(path, f"{kind} name does not end with {option} {suffix}"))
            continue
        key = stem.removesuffix(suffix) if suffix else stem
        if not key:
            problems.append(Problem(path, f"{kind} name is only the {option} {suffix}"))
        elif key in found:
            reason = f"has the same pairing key {key!r} as {found[key]}; keep only one"
            problems.append(Problem(path, reason))
        else:
            found[key] = path
    return found, problems


def pair_by_key(
    root: Path,
    images: list[Path],
    masks: list[Path],
    naming: Naming,
    expected: Callable[[str], str],
    *,
    split: Split | None = None,
    id_prefix: str = "",
) -> Listing:
    """Pair ``images`` with ``masks`` by key (module docstring).

    Args:
        root: the dataset root (kept on the listing).
        images: image files.
        masks: mask files.
        naming: the suffixes that give the keys.
        expected: maps the missing mask's stem (key + mask suffix) to where it was looked
            for, e.g. ``/data/masks/<stem>.*``.
        split: official split of every pair, or None.
        id_prefix: prepended to each id (the key).

    Returns:
        The pairs in key order; unpaired files are problems, and when nothing pairs the
        listing's ``hint`` says so and names the options that would pair them.
    """
    listing = Listing(root)
    image_keys, problems = keyed(images, naming.image_suffix, "image", "--image-suffix")
    mask_keys, mask_problems = keyed(masks, naming.mask_suffix, "mask", "--mask-suffix")
    for key in sorted(image_keys):
        mask = mask_keys.get(key)
        if mask is None:
            reason = f"image has no mask (expected {expected(key + naming.mask_suffix)})"
            problems.append(Problem(image_keys[key], reason))
        else:
            listing.pairs.append(RawPair(id_prefix + key, image_keys[key], mask, split))
    problems += [Problem(path, "mask has no image") for k, path in mask_keys.items()
                 if k not in image_keys]  # fmt: skip
    listing.problems += problems + mask_problems
    if images and masks and not listing.pairs:
        stems = [p.stem for p in images], [p.stem for p in masks]
        listing.hint = nothing_paired(*stems, naming)
    return listing


def nothing_paired(image_stems: list[str], mask_stems: list[str], naming: Naming) -> str:
    """The one-line hint for a listing where no image found its mask."""
    counts = f"nothing paired ({len(image_stems)} images, {len(mask_stems)} masks)"
    suggestion = suggest_naming(image_stems, mask_stems)
    if suggestion is None:
        return f"{counts}: no common suffix explains the names; see the pairing rule in --help"
    image_suffix, mask_suffix, paired = suggestion
    if (image_suffix, mask_suffix) == (naming.image_suffix, naming.mask_suffix):
        return counts  # cannot happen for a listing with no pairs, kept for safety
    n_images, n_masks = len(image_stems), len(mask_stems)
    if image_suffix and mask_suffix:
        why = _share(paired, n_images, "image stem", "is", "are") + (
            f" a key + {image_suffix!r} and the mask's stem that key + {mask_suffix!r}"
        )
    elif image_suffix:
        why = (
            _share(paired, n_images, "image stem", "is", "are") + f" a mask stem + {image_suffix!r}"
        )
    elif mask_suffix:
        why = (
            _share(paired, n_masks, "mask stem", "is", "are") + f" an image stem + {mask_suffix!r}"
        )
    else:
        why = _share(paired, n_masks, "mask stem", "equals", "equal") + " an image stem"
    return f"{counts}: {why}: try {_options(image_suffix, mask_suffix)}"


def _share(paired: int, total: int, noun: str, one: str, many: str) -> str:
    """``every mask stem is`` or ``3 of 4 mask stems are``."""
    return f"every {noun} {one}" if paired == total else f"{paired} of {total} {noun}s {many}"


def _options(image_suffix: str, mask_suffix: str) -> str:
    """The options that set exactly these suffixes (dropping ones set otherwise)."""
    parts = [f"--image-suffix {image_suffix}"] if image_suffix else []
    parts += [f"--mask-suffix {mask_suffix}"] if mask_suffix else []
    return " ".join(parts) or "no --image-suffix / --mask-suffix"


def suggest_naming(image_stems: list[str], mask_stems: list[str]) -> tuple[str, str, int] | None:
    """The ``(image_suffix, mask_suffix, pairs)`` that pair the most stems, or None.

    Considered: a mask stem = an image stem + any suffix; an image stem = a mask stem + any
    suffix; and both stems = a common key + a suffix starting at a separator (``_-. ``).
    A suggestion must pair at least half of the smaller side; ties prefer a single suffix,
    then the shorter.
    """
    images, masks = set(image_stems), set(mask_stems)
    votes: Counter[tuple[str, str]] = Counter()
    for mask in masks:
        votes.update(("", mask[k:]) for k in range(1, len(mask) + 1) if mask[:k] in images)
    for image in images:
        votes.update((image[k:], "") for k in range(1, len(image)) if image[:k] in masks)
    by_key: dict[str, list[str]] = {}
    for image in images:
        for key, suffix in _separator_splits(image):
            by_key.setdefault(key, []).append(suffix)
    for mask in masks:
        for key, mask_suffix in _separator_splits(mask):
            votes.update((s, mask_suffix) for s in by_key.get(key, ()) if s and mask_suffix)
    if not votes:
        return None
    (image_suffix, mask_suffix), paired = min(
        votes.items(),
        key=lambda kv: (-kv[1], bool(kv[0][0]) + bool(kv[0][1]), len(kv[0][0] + kv[0][1])),
    )
    if paired < _MIN_SHARE * min(len(images), len(masks)):
        return None
    return image_suffix, mask_suffix, paired


def _separator_splits(stem: str) -> list[tuple[str, str]]:
    """``(key, suffix)`` for every split of ``stem`` just before a separator character."""
    return [(stem[:k], stem[k:]) for k in range(1, len(stem)) if stem[k] in _SEPARATORS]


def glob_files(
    root: Path, pattern: str, exclude: frozenset[Path] = frozenset()
) -> tuple[list[Path], list[Problem]]:
    """Image files under ``root`` matching ``pattern``, sorted, and the matches that are bad.

    Hidden files and folders are skipped; a match that is no regular file (a broken
    symlink, a symlink loop, a FIFO or device) is a problem, as in ``folder``.
    """
    found, problems = [], []
    for path in sorted(root.glob(pattern)):
        hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
        if hidden or path.suffix.lower() not in IMAGE_SUFFIXES or path in exclude:
            continue
        kind, reason = entry_kind(path)
        if reason is not None:
            problems.append(Problem(path, reason))
        elif kind == "file":
            found.append(path)
    return found, problems
