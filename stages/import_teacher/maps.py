"""Read, check and resample one folder of a teacher's maps (the layouts of ``plc import-teacher``).

Layouts (``--layout``; ``auto`` picks one from the files):

- ``nnunet``: nnU-Net v2's ``--save_probabilities`` output, as ``export_prediction_from_logits``
  writes it: ``<case>.npz`` holding ``probabilities`` (C, 1, H, W) for 2-D data (or
  (C, H, W)) beside ``<case>.pkl`` (its properties, not read); the segmentations, JSON files
  and pickles beside them are ignored.
- ``arrays``: ``<id>.npy`` or ``<id>.npz`` (one array), (C, H, W) or (C, 1, H, W) floats:
  probabilities, or logits with ``--kind logits`` (softmax applied here, in float64).
- ``png``: single-channel 8- or 16-bit PNGs of p(foreground) (value / 255 or / 65535) for
  a binary dataset; the map is [1 − p, p].

A map's id is its file stem less ``--map-suffix``. Its (H, W) is the image's original
size (the manifest's ``orig_height`` × ``orig_width``), resampled here exactly as ``plc
prepare`` resampled the image (:func:`stages.prepare.readers.imageio.resize_image`:
``cv2.INTER_AREA`` when both sides shrink, ``cv2.INTER_LINEAR`` otherwise), or the store's
size already (taken as is); then every pixel is renormalised to sum to 1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.prepare.readers.base import Problem

logger = logging.getLogger(__name__)

EXTENSIONS = {"nnunet": (".npz",), "arrays": (".npy", ".npz"), "png": (".png",)}


class MapError(Exception):
    """A map that cannot be used; the message is every reason (the caller adds the path)."""


@dataclass(frozen=True)
class Expected:
    """What a dataset store expects of a map.

    Attributes:
        classes: the store's class names (C = their number).
        size: the store's (H, W).
        kind: "probabilities" or "logits" (arrays only).
        tolerance: the largest |Σ_c p − 1| accepted per pixel.
    """

    classes: tuple[str, ...]
    size: tuple[int, int]
    kind: str
    tolerance: float


def detect_layout(folder: Path, layout: str) -> tuple[str | None, list[Problem]]:
    """The layout of ``folder``: ``layout`` itself unless "auto" (then from the files).

    Returns:
        ``(layout, problems)``; layout None when auto finds none or several.
    """
    if layout != "auto":
        return layout, []
    files = _files(folder)
    stems = {p.stem for p in files if p.suffix == ".pkl"}
    if any(p.suffix == ".npz" and p.stem in stems for p in files):
        return "nnunet", []
    found = [name for name in ("arrays", "png") if any(p.suffix in EXTENSIONS[name] for p in files)]
    if len(found) == 1:
        return found[0], []
    if not found:
        why = "no maps found (nnU-Net's <case>.npz + <case>.pkl, .npy, .npz or .png files)"
    else:
        why = "it holds both arrays (.npy/.npz) and PNGs: pass --layout arrays or --layout png"
    return None, [Problem(folder, why)]


def list_maps(folder: Path, layout: str, suffix: str) -> tuple[dict[str, Path], list[Problem]]:
    """id → file of every map of ``layout`` in ``folder`` (other files are ignored).

    A stem without ``suffix``, an empty id, or two files of one id are problems.
    """
    found: dict[str, Path] = {}
    problems: list[Problem] = []
    ignored = 0
    for path in _files(folder):
        if path.suffix not in EXTENSIONS[layout]:
            ignored += 1
            continue
        if suffix and not path.stem.endswith(suffix):
            problems.append(Problem(path, f"map name does not end with --map-suffix {suffix}"))
            continue
        key = path.stem.removesuffix(suffix) if suffix else path.stem
        if not key:
            problems.append(Problem(path, "map name gives an empty id"))
        elif key in found:
            problems.append(Problem(path, f"a second map of id {key!r} (first: {found[key].name})"))
        else:
            found[key] = path
    if ignored:
        logger.info("%s: %d file(s) that are no %s maps ignored", folder, ignored, layout)
    return found, problems


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def read_map(path: Path, layout: str, expected: Expected, original: tuple[int, int]) -> np.ndarray:
    """The map of one file at the store's size, every pixel summing to 1.

    Args:
        path: the file.
        layout: "nnunet", "arrays" or "png".
        expected: what the store expects (:class:`Expected`).
        original: the image's original (H, W) (the manifest's).

    Returns:
        (C, H, W) float32 probabilities at ``expected.size``.

    Raises:
        MapError: every reason the file cannot be used, in one message.
    """
    array = _load(path, layout, len(expected.classes))
    reasons = _shape_problems(array, expected, original)
    if reasons:
        raise MapError("; ".join(reasons))
    probs = np.asarray(array, dtype=np.float64).reshape(array.shape[0], *array.shape[-2:])
    reasons = _value_problems(probs, expected.kind if layout == "arrays" else "probabilities",
                              expected.tolerance)  # fmt: skip
    if reasons:
        raise MapError("; ".join(reasons))
    if layout == "arrays" and expected.kind == "logits":
        probs = np.exp(probs - probs.max(0, keepdims=True))  # softmax over C, stable
    return resample(normalise(probs), expected.size)


def _load(path: Path, layout: str, num_classes: int) -> np.ndarray:
    if layout == "png":
        return _load_png(path, num_classes)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:  # numpy's errors for a damaged file
        raise MapError(f"unreadable {path.suffix} file ({err})") from err
    if path.suffix == ".npy":
        return loaded
    with loaded:
        names = list(loaded.files)
        if layout == "nnunet":
            if "probabilities" not in names:
                raise MapError(f"no 'probabilities' array (it holds {names}); nnU-Net writes "
                               "one with nnUNetv2_predict --save_probabilities")  # fmt: skip
            return loaded["probabilities"]
        if len(names) != 1:
            raise MapError(f"holds {len(names)} arrays {names}; expected one (C, H, W) array")
        return loaded[names[0]]


def _load_png(path: Path, num_classes: int) -> np.ndarray:
    from stages.prepare.readers.imageio import ReadError, decode

    if num_classes != 2:
        raise MapError(f"PNG maps hold p(foreground) of a binary dataset, this one has "
                       f"{num_classes} classes: export (C, H, W) arrays (--layout arrays)")  # fmt: skip
    try:
        array, _ = decode(path.read_bytes())
    except ReadError as err:
        raise MapError(str(err)) from err
    if array.ndim != 2 or array.dtype not in (np.uint8, np.uint16):
        raise MapError(f"a {array.dtype} PNG of shape {array.shape}; expected a single-channel "
                       "8- or 16-bit PNG of p(foreground)")  # fmt: skip
    p = array.astype(np.float64) / np.iinfo(array.dtype).max  # (H, W)
    return np.stack([1.0 - p, p])  # (2, H, W)


def _shape_problems(array: np.ndarray, expected: Expected, original: tuple[int, int]) -> list[str]:
    shape = tuple(array.shape)
    if array.ndim == 4 and shape[1] != 1:
        return [f"is a 3-D volume {shape} (C, Z, H, W) with Z = {shape[1]} slices; plc-kd "
                "imports 2-D maps (C, H, W) or (C, 1, H, W): one per 2-D image"]  # fmt: skip
    if array.ndim not in (3, 4):
        return [f"has shape {shape}; expected (C, H, W) or (C, 1, H, W)"]
    out = []
    if not np.issubdtype(array.dtype, np.floating):
        out.append(f"has dtype {array.dtype}; expected floats")
    c, hw = shape[0], shape[-2:]
    if c != len(expected.classes):
        out.append(f"has C = {c} channels, the dataset has {len(expected.classes)} classes "
                   f"({', '.join(expected.classes)})")  # fmt: skip
    if hw not in (tuple(original), tuple(expected.size)):
        out.append(f"is {hw[0]}×{hw[1]}; expected the image's original size "
                   f"{original[0]}×{original[1]} or the store's {expected.size[0]}×"
                   f"{expected.size[1]}")  # fmt: skip
    return out


def _value_problems(probs: np.ndarray, kind: str, tolerance: float) -> list[str]:
    """Non-finite values; for probabilities also negatives, values above 1, sums off 1."""
    finite = np.isfinite(probs)
    if not finite.all():
        nan = int(np.isnan(probs).sum())
        return [f"holds {nan} NaN and {int((~finite).sum()) - nan} infinite value(s)"]
    if kind == "logits":
        return []
    out = []
    low, high = int((probs < 0).sum()), int((probs > 1).sum())
    if low or high:
        out.append(f"{low} negative value(s) and {high} above 1 (min {probs.min():.3g}, max "
                   f"{probs.max():.3g}): these look like logits: pass --kind logits")  # fmt: skip
    off = np.abs(probs.sum(0) - 1.0)  # (H, W)
    if (bad := int((off > tolerance).sum())) > 0:
        out.append(f"{bad} pixel(s) whose probabilities do not sum to 1 (worst |Σp − 1| = "
                   f"{off.max():.3g}, tolerance {tolerance:g})")  # fmt: skip
    return out


def normalise(probs: np.ndarray) -> np.ndarray:
    """(C, H, W) non-negative values → each pixel divided by its sum over C."""
    probs = np.clip(probs, 0.0, None)
    return probs / np.maximum(probs.sum(0, keepdims=True), np.finfo(probs.dtype).tiny)


def resample(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, H, W) probabilities → (C, *size) float32, resized as ``plc prepare`` resized the
    image (the same function) and renormalised."""
    from stages.prepare.readers.imageio import resize_image

    if probs.shape[-2:] == tuple(size):
        return normalise(probs).astype(np.float32)
    if size[0] != size[1]:  # prepare writes square stores only
        raise ValueError(f"the dataset store's size {size} is not square.")
    hwc = np.ascontiguousarray(probs.transpose(1, 2, 0), dtype=np.float32)  # (H, W, C)
    out = resize_image(hwc, size[0]).reshape(size[0], size[1], -1)  # cv2 drops C = 1
    return normalise(out.transpose(2, 0, 1).astype(np.float64)).astype(np.float32)
