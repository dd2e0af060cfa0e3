"""Load one raw pair: read both files, check them, normalise, resize, hash, flag."""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.prepare.readers.base import Problem, RawPair
from stages.prepare.readers.classes import ClassMap, read_class_mask
from stages.prepare.readers.imageio import (
    ReadError,
    read_image,
    read_mask,
    resize_image,
    resize_mask,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedPair:
    """A checked, normalised and resized pair with what the manifest records about it.

    Attributes:
        image: ``(S, S, 3)`` uint8 RGB.
        mask: ``(S, S)`` uint8 class ids: {0, 1}, or ``[0, C)`` with a class map.
        orig_height: the source image's height in pixels.
        orig_width: the source image's width in pixels.
        image_sha256: SHA-256 (hex) of the image file's bytes.
        mask_sha256: SHA-256 (hex) of the mask file's bytes, None without a mask file.
        fg_fraction: foreground (any class but 0) fraction of the stored (resized) mask.
        flags: ``empty_mask``, ``negative``, ``resized``, ``lesion_lost_in_resize``.
    """

    image: np.ndarray
    mask: np.ndarray
    orig_height: int
    orig_width: int
    image_sha256: str
    mask_sha256: str | None
    fg_fraction: float
    flags: tuple[str, ...]


def _read(
    path: Path, decoder: Callable[[bytes], np.ndarray]
) -> tuple[np.ndarray | None, str | None, Problem | None]:
    """``(array, sha256, problem)`` for one file; exactly one of array and problem is None."""
    try:
        data = path.read_bytes()
    except OSError as err:
        return None, None, Problem(path, f"cannot read file ({err.strerror or err})")
    digest = hashlib.sha256(data).hexdigest()
    try:
        return decoder(data), digest, None
    except ReadError as err:
        return None, digest, Problem(path, str(err))


def _size_text(array: np.ndarray) -> str:
    return f"{array.shape[1]}×{array.shape[0]}"


def load_pair(
    pair: RawPair, size: int, classes: ClassMap | None = None
) -> tuple[LoadedPair | None, list[Problem]]:
    """Read, check and normalise one pair; collect every problem instead of stopping.

    Args:
        pair: the raw pair.
        size: side of the stored square image.
        classes: map of mask values (or colours) to class ids; None: binary masks,
            thresholded.

    Returns:
        ``(loaded, problems)``: ``loaded`` is None exactly when ``problems`` is non-empty.
    """
    image, image_sha, image_problem = _read(pair.image_path, read_image)
    problems = [image_problem] if image_problem else []
    mask, mask_sha = None, None
    if pair.mask_path is not None:
        decoder = (
            read_mask if classes is None else functools.partial(read_class_mask, classes=classes)
        )
        mask, mask_sha, mask_problem = _read(pair.mask_path, decoder)
        problems += [mask_problem] if mask_problem else []
    elif image is not None:
        mask = np.zeros(image.shape[:2], np.uint8)  # a negative without a mask file
    if image is None or mask is None:
        return None, problems
    mask_file = pair.mask_path or pair.image_path
    if mask.shape != image.shape[:2]:
        reason = f"mask is {_size_text(mask)} but its image is {_size_text(image)} (W×H)"
        return None, [Problem(mask_file, reason)]
    if pair.negative and mask.any():
        return None, [Problem(mask_file, "mask of a negative (no-lesion) image is not empty")]
    return _finish(pair, image, mask, image_sha, mask_sha, size), []


def _finish(
    pair: RawPair,
    image: np.ndarray,
    mask: np.ndarray,
    image_sha: str | None,
    mask_sha: str | None,
    size: int,
) -> LoadedPair:
    """Resize and describe a pair whose files passed every check."""
    height, width = mask.shape
    small_image, small_mask = resize_image(image, size), resize_mask(mask, size)
    flags = []
    if not small_mask.any():
        flags.append("empty_mask")
    if pair.negative:
        flags.append("negative")
    if (height, width) != (size, size):
        flags.append("resized")
    if mask.any() and not small_mask.any():
        flags.append("lesion_lost_in_resize")
        logger.warning("%s: the lesion vanished when resized to %d²", pair.mask_path, size)
    assert image_sha is not None  # set whenever the image decoded
    return LoadedPair(
        image=small_image,
        mask=small_mask,
        orig_height=int(height),
        orig_width=int(width),
        image_sha256=image_sha,
        mask_sha256=mask_sha,
        fg_fraction=float(np.count_nonzero(small_mask)) / small_mask.size,
        flags=tuple(flags),
    )
