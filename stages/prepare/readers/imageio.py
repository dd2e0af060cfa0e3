"""Decode raw image and mask files and normalise them: RGB uint8 images, {0, 1} masks.

OpenCV decodes first (``IMREAD_UNCHANGED``, so bit depth, alpha and palette-free gray
survive); Pillow is the fallback for what OpenCV cannot read and the reader of palette
masks (whose values are the palette indices, not the colours). Truncated files are caught
even where a decoder would return a partial image: a JPEG must end with its end-of-image
marker and a PNG with its ``IEND`` chunk, or Pillow must load it completely. Before any
decoder runs, the header's declared size and channel count are checked
(:mod:`stages.prepare.readers.headers`): a file declaring more than ``MAX_PIXELS`` is refused
without being decoded.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from stages.prepare.readers.headers import MAX_CHANNELS, check_declared

logger = logging.getLogger(__name__)

NON_BINARY_LIMIT = 0.05  # largest fraction of mid-grey mask pixels JPEG ringing explains
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"


class ReadError(Exception):
    """A file that cannot be used; the message is the reason (the caller adds the path)."""


@contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own stderr log while decoding (its errors become ReadErrors here)."""
    log = cv2.utils.logging
    previous = log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        log.setLogLevel(previous)


def check_complete(data: bytes) -> None:
    """Raise ReadError for an empty or truncated JPEG, PNG or BMP file."""
    if not data:
        raise ReadError("file is empty")
    tail = data.rstrip(b"\x00\r\n\t ")
    if data[:2] == b"\xff\xd8" and not tail.endswith(_JPEG_END):
        _confirm_with_pillow(data, "truncated JPEG (no end-of-image marker)")
    elif data[:8] == _PNG_SIGNATURE and not tail.endswith(_PNG_END):
        _confirm_with_pillow(data, "truncated PNG (no IEND chunk)")
    elif data[:2] == b"BM" and len(data) >= 6:
        declared = int.from_bytes(data[2:6], "little")
        if len(data) < declared:
            raise ReadError(f"truncated BMP ({len(data)} of {declared} bytes)")


def _confirm_with_pillow(data: bytes, reason: str) -> None:
    """Trailing junk after the end marker is harmless: accept the file if Pillow loads it."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone relaxed Pillow; trust the marker
        raise ReadError(reason)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise ReadError(f"{reason}: {err}") from err


def decode(data: bytes, *, palette_indices: bool = False) -> tuple[np.ndarray, bool]:
    """Decode an image file's bytes.

    Args:
        data: the file content.
        palette_indices: for a palette PNG return the indices (masks), not the colours.

    Returns:
        ``(array, is_bgr)``: ``(H, W)`` or ``(H, W, C)`` in the file's dtype; ``is_bgr`` says
        the channels are in OpenCV's BGR(A) order.

    Raises:
        ReadError: naming why the bytes are not a usable image.
    """
    check_complete(data)
    try:
        check_declared(data)
    except ValueError as err:
        raise ReadError(str(err)) from None
    if palette_indices and _is_palette_png(data):
        return _decode_pillow(data, palette_indices=True), False
    try:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:  # OpenCV asserts on some malformed headers; Pillow gets its turn
        array = None
    if array is not None and array.size > 0:
        return array, True
    return _decode_pillow(data, palette_indices=palette_indices), False


def _is_palette_png(data: bytes) -> bool:
    """True for a PNG whose IHDR colour type is 3 (palette)."""
    return data[:8] == _PNG_SIGNATURE and len(data) > 25 and data[25] == 3


def _decode_pillow(data: bytes, *, palette_indices: bool) -> np.ndarray:
    """Decode with Pillow: ``(H, W)`` or ``(H, W, 3)``, RGB order, 8 or 16 bit."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode == "P" and palette_indices:
                return np.asarray(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F", "L", "RGB"):
                return np.asarray(img)
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ReadError(f"unreadable or corrupt image file ({err})") from err
    except (Image.DecompressionBombError, MemoryError) as err:
        raise ReadError(f"too large to decode ({err or 'out of memory'})") from err


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale any supported pixel type to uint8: 16-bit by 255/65535, floats in [0, 1] by 255."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ReadError(f"{_non_finite(array)}; expected 8/16-bit integers or floats in [0, 1]")
    if array.dtype.kind in "ui" and array.min() >= 0 and array.max() <= 65535:
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if array.dtype.kind == "f" and 0 <= array.min() <= array.max() <= 1:
        return np.round(array * 255).astype(np.uint8)
    raise ReadError(
        f"unsupported pixel type {array.dtype} with values {array.min()}..{array.max()} "
        "(expected 8/16-bit integers or floats in [0, 1])"
    )


def _non_finite(array: np.ndarray) -> str:
    """``"float32 pixel values not finite (12 NaN, 3 infinite)"`` for a float array."""
    nan = int(np.isnan(array).sum())
    inf = int(np.isinf(array).sum())
    return f"{array.dtype} pixel values not finite ({nan} NaN, {inf} infinite)"


def to_rgb(array: np.ndarray, is_bgr: bool) -> np.ndarray:
    """Normalise a decoded image to ``(H, W, 3)`` uint8 RGB.

    Gray (and gray + alpha) is repeated to three channels, alpha is dropped, BGR is swapped.
    """
    array = to_uint8(array)
    if array.ndim == 3 and array.shape[2] in (1, 2):
        array = array[..., 0]  # gray (+ alpha) -> gray
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)  # (H, W) -> (H, W, 3)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ReadError(f"unsupported image shape {array.shape} (expected gray, RGB or RGBA)")
    if is_bgr:
        code = cv2.COLOR_BGR2RGB if array.shape[2] == 3 else cv2.COLOR_BGRA2RGB
        return cv2.cvtColor(array, code)
    return np.ascontiguousarray(array[..., :3])


def to_binary_mask(array: np.ndarray) -> np.ndarray:
    """Normalise a decoded binary mask to ``(H, W)`` uint8 in {0, 1}.

    Accepts 0/255, 0/1, 16-bit, gray stored as RGB (equal channels), a single colour on
    black (e.g. red, IDRiD) and JPEG artefacts. Colour masks are reduced by the channel
    maximum, then thresholded at half the largest value present.

    Raises:
        ReadError: for class-index-like masks (largest value 2..63) and masks with more
            mid-grey pixels than JPEG ringing explains ("non-binary mask values").
    """
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.ndim == 3 and not 1 <= array.shape[2] <= MAX_CHANNELS:
        raise ReadError(f"mask has {array.shape[2]} channels; expected 1 to {MAX_CHANNELS}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ReadError(f"mask {_non_finite(array)}; expected values near 0 and near 1 or 255")
    if array.size and array.min() < 0:
        raise ReadError(f"mask has negative values (min {array.min():g}); expected 0/1 or 0/255")
    if array.ndim == 3:
        planes = [array[..., c] for c in range(3 if array.shape[2] >= 3 else 1)]  # drop alpha
        array = functools.reduce(np.maximum, planes)  # (H, W, C) -> (H, W), fast for C = 3
    if array.ndim != 2:
        raise ReadError(f"unsupported mask shape {array.shape} (expected a 2-D mask)")
    top = float(array.max())
    if top == 0:
        return np.zeros(array.shape, np.uint8)
    if 1 < top < 64:
        raise ReadError(
            f"non-binary mask values: the largest value is {top:g}, which looks like class "
            "indices; expected 0/1 or 0/255, or pass --classes for multi-class masks (e.g. "
            "--classes 'background=0,lesion_a=1,lesion_b=2')"
        )
    mid = np.count_nonzero((array > top / 4) & (array < top * 3 / 4)) / array.size
    if mid > NON_BINARY_LIMIT:
        raise ReadError(
            f"non-binary mask values: {mid:.1%} of pixels are mid-grey (between {top / 4:g} "
            f"and {top * 3 / 4:g}); expected values near 0 and near {top:g}"
        )
    return (array > top / 2).astype(np.uint8)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize ``(H, W, C)`` to ``(size, size, C)``: area when shrinking, bilinear otherwise.

    Used for the RGB images of ``plc prepare`` and, the same way, for the float32 maps of
    ``plc import-teacher`` (any C; OpenCV returns ``(size, size)`` for C = 1).
    """
    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return image
    shrink = height >= size and width >= size
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize ``(H, W)`` to ``(size, size)`` with nearest neighbour (class ids stay ids)."""
    if mask.shape == (size, size):
        return mask
    return cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)


def read_image(data: bytes) -> np.ndarray:
    """Decode and normalise an image file's bytes to ``(H, W, 3)`` uint8 RGB."""
    array, is_bgr = decode(data)
    return to_rgb(array, is_bgr)


def read_mask(data: bytes) -> np.ndarray:
    """Decode and normalise a binary mask file's bytes to ``(H, W)`` uint8 {0, 1}."""
    array, _ = decode(data, palette_indices=True)
    return to_binary_mask(array)
