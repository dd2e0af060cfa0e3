"""Multi-class masks: the ``--classes`` map from mask values (or colours) to class ids.

Syntax (``prepare --classes``): comma-separated ``name=value`` entries; the entry's position
is its class id, so the first entry is class 0, the background (left out of Dice):

- gray values: ``background=0,lesion_a=1,lesion_b=2`` or ``background=0,lesion=255``
  (the value is the pixel value as stored in the file: 0..255, or 0..65535 for 16-bit
  masks; a palette PNG's values are its palette indices);
- colours: ``background=#000000,a=#ff0000,b=#00ff00`` (``#rrggbb``, for RGB masks).

Every pixel must hold one of the listed values: any other value is an error naming the
file, the value and how many pixels hold it. Without ``--classes`` masks are binary and
thresholded (``stages.prepare.readers.imageio.to_binary_mask``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

from stages.prepare.readers.imageio import ReadError, decode

logger = logging.getLogger(__name__)

MAX_CLASSES = 255  # class ids are stored as uint8
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
_SHOWN = 5  # unknown values named in one message
Colour = tuple[int, int, int]


@dataclass(frozen=True)
class ClassMap:
    """Class names (index = class id) and the mask value or colour of each.

    Attributes:
        names: class names; ``names[0]`` is the background.
        values: one gray value (int) per class, or one ``(r, g, b)`` colour per class.
    """

    names: tuple[str, ...]
    values: tuple[int, ...] | tuple[Colour, ...]

    @property
    def colour(self) -> bool:
        """Whether the map is of colours (RGB masks) rather than gray values."""
        return isinstance(self.values[0], tuple)

    def spec(self) -> str:
        """The canonical ``--classes`` text of this map (lower-case colours)."""
        return ",".join(
            f"{n}={_value_text(v)}" for n, v in zip(self.names, self.values, strict=True)
        )


def _value_text(value: int | Colour) -> str:
    return "#{:02x}{:02x}{:02x}".format(*value) if isinstance(value, tuple) else str(value)


def parse_classes(spec: str) -> ClassMap:
    """Parse a ``--classes`` text (module docstring) into a :class:`ClassMap`.

    Raises:
        ValueError: naming ``--classes``, the bad entry and the expected form.
    """
    form = "expected 'background=0,lesion_a=1,...' or 'background=#000000,a=#ff0000,...'"
    entries = [e.strip() for e in spec.split(",")] if spec.strip() else []
    if len(entries) < 2:
        raise ValueError(f"--classes needs at least two entries (background first); {form}.")
    if len(entries) > MAX_CLASSES:
        raise ValueError(f"--classes has {len(entries)} entries; at most {MAX_CLASSES}.")
    names, values = [], []
    for entry in entries:
        name, eq, text = (part.strip() for part in entry.partition("="))
        if not eq or not _NAME.match(name):
            raise ValueError(f"--classes entry {entry!r} is not name=value; {form}.")
        names.append(name)
        values.append(_parse_value(text, entry, form))
    if len({isinstance(v, tuple) for v in values}) > 1:
        raise ValueError(f"--classes mixes gray values and #rrggbb colours in {spec!r}; {form}.")
    for kind, items in (("name", names), ("value", [_value_text(v) for v in values])):
        repeated = sorted({i for i in items if items.count(i) > 1})
        if repeated:
            raise ValueError(f"--classes repeats the {kind} {repeated[0]!r}; each must be unique.")
    return ClassMap(tuple(names), tuple(values))  # type: ignore[arg-type]


def _parse_value(text: str, entry: str, form: str) -> int | Colour:
    if _COLOUR.match(text):
        return (int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16))
    if text.isdigit() and int(text) <= 65535:
        return int(text)
    raise ValueError(
        f"--classes entry {entry!r}: the value must be 0..65535 or #rrggbb, got {text!r}; {form}."
    )


def read_class_mask(data: bytes, classes: ClassMap) -> np.ndarray:
    """Decode a mask file's bytes and map each pixel's value to its class id.

    Returns:
        ``(H, W)`` uint8 class ids in ``[0, len(classes.names))``.

    Raises:
        ReadError: a value (or colour) not in the map, naming the values and their pixel
            counts; a colour mask under a gray map; an unsupported shape.
    """
    if classes.colour:
        array, is_bgr = decode(data)
        return _map_colours(_as_rgb(array, is_bgr), classes, data)
    array, _ = decode(data, palette_indices=True)
    return _map_values(_as_gray(array), classes, data)


def _as_gray(array: np.ndarray) -> np.ndarray:
    """``(H, W)`` values of a gray mask (gray stored as RGB/RGBA with equal channels too)."""
    if array.ndim == 3:
        planes = array[..., : min(array.shape[2], 3)]  # drop alpha
        if planes.shape[2] == 3 and not (
            np.array_equal(planes[..., 0], planes[..., 1])
            and np.array_equal(planes[..., 0], planes[..., 2])
        ):
            raise ReadError(
                "mask has colours but --classes maps gray values; write colours in "
                "--classes (e.g. 'background=#000000,lesion=#ff0000')"
            )
        array = planes[..., 0]
    in_range = array.dtype.kind in "ub" or (
        array.dtype.kind == "i" and array.min() >= 0 and array.max() <= 65535
    )
    if array.ndim != 2 or not in_range:
        raise ReadError(f"unsupported mask {array.dtype} {array.shape} (expected 8/16-bit gray)")
    return array if array.dtype in (np.uint8, np.uint16) else array.astype(np.uint16)


def _as_rgb(array: np.ndarray, is_bgr: bool) -> np.ndarray:
    """``(H, W, 3)`` RGB of a decoded colour (or gray) mask; 8-bit only."""
    if array.dtype != np.uint8:
        raise ReadError(f"colour --classes need an 8-bit mask, got {array.dtype}")
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)  # gray g is the colour (g, g, g)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ReadError(f"unsupported mask shape {array.shape} (expected gray, RGB or RGBA)")
    rgb = array[..., :3]
    return rgb[..., ::-1] if is_bgr else rgb


def _map_values(gray: np.ndarray, classes: ClassMap, data: bytes) -> np.ndarray:
    lut = np.full(65536, MAX_CLASSES, np.uint8)  # MAX_CLASSES marks "not in the map"
    for class_id, value in enumerate(classes.values):
        lut[value] = class_id  # type: ignore[index]
    out = lut[gray]
    _check_known(out, gray, classes, data, str)
    return out


def _map_colours(rgb: np.ndarray, classes: ClassMap, data: bytes) -> np.ndarray:
    code = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    out = np.full(code.shape, MAX_CLASSES, np.uint8)
    for class_id, (r, g, b) in enumerate(classes.values):  # type: ignore[misc]
        out[code == (r << 16) | (g << 8) | b] = class_id
    _check_known(out, code, classes, data, lambda c: f"#{c:06x}")
    return out


def _check_known(out: np.ndarray, raw: np.ndarray, classes: ClassMap, data: bytes, show) -> None:
    """Raise ReadError naming the raw values that mapped to no class."""
    unknown = out == MAX_CLASSES
    if not unknown.any():
        return
    values, counts = np.unique(raw[unknown], return_counts=True)
    order = np.argsort(-counts, kind="stable")[:_SHOWN]
    listed = ", ".join(f"{show(int(values[i]))} ({int(counts[i])} px)" for i in order)
    more = f" and {len(values) - _SHOWN} more" if len(values) > _SHOWN else ""
    lossy = "; JPEG masks are lossy, use PNG" if data[:2] == b"\xff\xd8" else ""
    raise ReadError(f"mask value(s) not in --classes {classes.spec()}: {listed}{more}{lossy}")
