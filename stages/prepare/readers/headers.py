"""What an image file declares in its header — width, height, channels — read without decoding.

A hostile or broken file can declare 100 000 × 100 000 pixels in a few hundred bytes; a
decoder would try to allocate tens of gigabytes before noticing the data is missing. The
header is parsed here (PNG ``IHDR``, BMP info header, JPEG start-of-frame, TIFF first IFD)
and checked against :data:`MAX_PIXELS` before any decoder sees the bytes. Formats parsed
here need no decoder at all; anything else falls back to Pillow's lazy ``Image.open``,
which reads the header only.
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

MAX_PIXELS = 1 << 26  # 67.1 MP; the largest published images here (ISIC) are about 30 MP
MAX_CHANNELS = 4  # gray, gray + alpha, RGB, RGBA
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # IHDR colour type -> samples per pixel
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # DHT, JPG, DAC are not frames
_TIFF_TAGS = {256: "width", 257: "height", 277: "channels"}


@dataclass(frozen=True)
class Declared:
    """The dimensions a file's header declares (``channels`` is None where unknown)."""

    width: int
    height: int
    channels: int | None = None

    @property
    def pixels(self) -> int:
        return self.width * self.height


def declared(data: bytes) -> Declared | None:
    """The header's dimensions, or None where no header could be parsed (not an image).

    Never decodes pixel data. PNG, BMP, JPEG and classic TIFF are parsed here; other
    content goes to Pillow's lazy open.

    Raises:
        ValueError: for a header Pillow refuses as a decompression bomb.
    """
    try:
        parsed = _parse(data)
    except (struct.error, IndexError, ValueError):
        parsed = None  # a malformed header: the decoder will name the damage
    return parsed if parsed is not None else _pillow_header(data)


def _parse(data: bytes) -> Declared | None:
    if data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return Declared(width, height, _PNG_CHANNELS.get(data[25]))
    if data[:2] == b"BM":
        return _bmp(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff(data)
    return None


def _bmp(data: bytes) -> Declared:
    (header_size,) = struct.unpack("<I", data[14:18])
    if header_size == 12:  # BITMAPCOREHEADER: 16-bit width and height
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    return Declared(abs(width), abs(height))  # a negative height is a top-down bitmap


def _jpeg(data: bytes) -> Declared | None:
    """Walk the marker segments to the first start-of-frame."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF:
            height, width, channels = struct.unpack(">HHB", data[pos + 5 : pos + 10])
            return Declared(width, height, channels)
        pos += 2 + length
    return None


def _tiff(data: bytes) -> Declared | None:
    """Width, height and samples per pixel from the first IFD of a classic TIFF."""
    order = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[offset : offset + 2])
    found: dict[str, int] = {}
    for index in range(count):
        at = offset + 2 + 12 * index
        tag, kind = struct.unpack(order + "HH", data[at : at + 4])
        if tag in _TIFF_TAGS and kind in (3, 4):  # SHORT or LONG, stored in the entry
            code, size = ("H", 2) if kind == 3 else ("I", 4)
            (found[_TIFF_TAGS[tag]],) = struct.unpack(order + code, data[at + 8 : at + 8 + size])
    if "width" not in found or "height" not in found:
        return None
    return Declared(found["width"], found["height"], found.get("channels", 1))


def _pillow_header(data: bytes) -> Declared | None:
    """Pillow's lazy open (header only), for formats not parsed above."""
    try:
        # Pillow warns from 89 MP up; the size is checked against MAX_PIXELS right after.
        # (catch_warnings swaps a process-wide filter list: at worst a warning shows.)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return Declared(img.width, img.height, len(img.getbands()))
    except Image.DecompressionBombError:
        raise ValueError(
            f"the header declares more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels "
            f"(Pillow's decompression-bomb limit), over the limit of {_limit_text()}; "
            "refused without decoding it — downscale the file"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


def _limit_text() -> str:
    return f"{MAX_PIXELS / 1e6:.1f} MP (MAX_PIXELS in stages/prepare/readers/headers.py)"


def check_declared(data: bytes) -> None:
    """Raise ValueError naming what is wrong when the header declares a size not to decode."""
    size = declared(data)
    if size is None:
        return
    if size.width == 0 or size.height == 0:
        raise ValueError(f"the header declares an empty image ({size.width}×{size.height})")
    if size.pixels > MAX_PIXELS:
        raise ValueError(
            f"the header declares {size.width}×{size.height} pixels "
            f"({size.pixels / 1e6:,.1f} MP), over the limit of {_limit_text()}; refused "
            "without decoding it — downscale the file"
        )
    if size.channels is not None and not 1 <= size.channels <= MAX_CHANNELS:
        raise ValueError(
            f"the header declares {size.channels} channels; expected 1 (gray), 2 (gray + "
            "alpha), 3 (RGB) or 4 (RGBA)"
        )
