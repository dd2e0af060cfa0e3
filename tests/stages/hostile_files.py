"""Byte-level writers for hostile image files: headers that lie, TIFFs of any sample type.

OpenCV and Pillow refuse to *write* most of what these tests need (5-channel or float RGB
TIFFs, a PNG declaring 10⁵ × 10⁵ pixels with a few bytes of data), so the files are
assembled here from the format specifications (PNG: RFC 2083; TIFF 6.0 baseline;
JPEG: ITU T.81 markers; BMP: BITMAPINFOHEADER).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

_SHORT, _LONG = 3, 4


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_declaring(width: int, height: int, colour_type: int = 2) -> bytes:
    """A well-formed PNG whose IHDR declares ``width × height`` but holds 100 bytes of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + _png_chunk(b"IEND", b"")
    )


def jpeg_declaring(width: int, height: int, channels: int = 3) -> bytes:
    """SOI, a baseline start-of-frame declaring ``width × height``, EOI: no scan data."""
    components = b"".join(bytes([i + 1, 0x11, 0]) for i in range(channels))
    sof = struct.pack(">BHHB", 8, height, width, channels) + components
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


def bmp_declaring(width: int, height: int) -> bytes:
    """A 24-bit BMP header declaring ``width × height`` followed by 64 bytes of pixels."""
    pixels = b"\x00" * 64
    size = 14 + 40 + len(pixels)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 0, 0, 0, 0)
    return b"BM" + struct.pack("<IHHI", size, 0, 0, 54) + info + pixels


def tiff_bytes(array: np.ndarray, *, width: int | None = None, height: int | None = None) -> bytes:
    """An uncompressed little-endian TIFF of ``(H, W)`` or ``(H, W, C)`` in its own dtype.

    Any channel count and any of u/i/f sample formats; ``width``/``height`` override what
    the header declares (the pixel data stays ``array``'s).
    """
    a = np.ascontiguousarray(array)
    h, w = a.shape[:2]
    channels = 1 if a.ndim == 2 else a.shape[2]
    data = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
    declared_w, declared_h = width or w, height or h
    entries = [
        (256, _LONG, [declared_w]),
        (257, _LONG, [declared_h]),
        (258, _SHORT, [a.dtype.itemsize * 8] * channels),  # bits per sample
        (259, _SHORT, [1]),  # no compression
        (262, _SHORT, [2 if channels >= 3 else 1]),  # RGB or black-is-zero
        (273, _LONG, [0]),  # strip offset, patched below
        (277, _SHORT, [channels]),
        (278, _LONG, [declared_h]),  # one strip
        (279, _LONG, [len(data)]),
        (284, _SHORT, [1]),  # chunky
        (339, _SHORT, [{"u": 1, "i": 2, "f": 3}[a.dtype.kind]] * channels),  # sample format
    ]
    if channels in (2,) or channels > 3:
        entries.append((338, _SHORT, [0] * (channels - (1 if channels == 2 else 3))))
        entries.sort()
    extra_at = 8 + 2 + 12 * len(entries) + 4
    extra, fields = b"", []
    for tag, kind, values in entries:
        code = "H" if kind == _SHORT else "I"
        packed = struct.pack("<" + code * len(values), *values)
        if len(packed) <= 4:
            fields.append((tag, kind, len(values), packed.ljust(4, b"\x00")))
        else:
            fields.append((tag, kind, len(values), struct.pack("<I", extra_at + len(extra))))
            extra += packed
    data_at = extra_at + len(extra)
    ifd = struct.pack("<H", len(fields))
    for tag, kind, count, value in fields:
        value = struct.pack("<I", data_at) if tag == 273 else value
        ifd += struct.pack("<HHI", tag, kind, count) + value
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00\x00\x00\x00" + extra + data
