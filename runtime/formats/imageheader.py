"""Image sizes read from file headers, before anything is decoded (the decompression-bomb check).

A 2.6 MB PNG can declare 30000 x 30000 pixels and decode to 2.7 GB, and ``vce-run`` decodes up to
four frames at once. OpenCV has its own limit, ``OPENCV_IO_MAX_IMAGE_PIXELS`` (default 2**30 pixels,
3 GB of BGR; ``modules/imgcodecs/src/loadsave.cpp``), but it is a static constant read once when
the OpenCV library loads, so setting it from Python after ``import cv2`` does nothing, and it is far
above what a capsule frame needs. vce reads the width and height from the header itself and refuses
an image above :data:`MAX_IMAGE_PIXELS` before OpenCV sees it.

Formats: PNG (IHDR), JPEG (the first SOFn marker), BMP (BITMAPCOREHEADER and later), TIFF and
BigTIFF (the first IFD, the page OpenCV decodes), WebP (VP8, VP8L, VP8X): the suffixes a frame
folder accepts. Anything else returns None: vce does not decode an image whose size it cannot bound.
"""

from __future__ import annotations

import struct

from vce.runtime.errors import VCEError

#: the most pixels one frame may have: 32 Mpx (8K UHD, 7680 x 4320, fits; 96 MB decoded as BGR)
MAX_IMAGE_PIXELS = 1 << 25
#: the largest image file read at all
MAX_IMAGE_BYTES = 256 << 20

_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _png(data: bytes | memoryview) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", data[16:24])
    return w, h


def _jpeg(data: bytes | memoryview) -> tuple[int, int] | None:
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or a scan before any frame header
            return None
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            if pos + 9 > n:
                return None
            h, w = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return w, h
        pos += 2 + length
    return None


def _bmp(data: bytes | memoryview) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    (dib,) = struct.unpack("<I", data[14:18])
    if dib == 12:
        w, h = struct.unpack("<HH", data[18:22])
        return w, h
    w, h = struct.unpack("<ii", data[18:26])
    return abs(w), abs(h)


def _tiff(data: bytes | memoryview) -> tuple[int, int] | None:
    order = "<" if data[:2] == b"II" else ">"
    (version,) = struct.unpack(order + "H", data[2:4])
    big = version == 43
    try:
        if big:
            (offset,) = struct.unpack(order + "Q", data[8:16])
            (count,) = struct.unpack(order + "Q", data[offset : offset + 8])
            start, size = offset + 8, 20
        else:
            (offset,) = struct.unpack(order + "I", data[4:8])
            (count,) = struct.unpack(order + "H", data[offset : offset + 2])
            start, size = offset + 2, 12
        found: dict[int, int] = {}
        for i in range(min(count, 4096)):
            entry = data[start + i * size : start + (i + 1) * size]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag not in (256, 257):
                continue
            value = entry[12:] if big else entry[8:]
            if kind == 3:  # SHORT
                (found[tag],) = struct.unpack(order + "H", value[:2])
            elif kind == 4:  # LONG
                (found[tag],) = struct.unpack(order + "I", value[:4])
            elif kind == 16 and big:  # LONG8
                (found[tag],) = struct.unpack(order + "Q", value[:8])
            else:
                return None
    except struct.error:
        return None
    if 256 not in found or 257 not in found:
        return None
    return found[256], found[257]


def _webp(data: bytes | memoryview) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def image_dimensions(data: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) declared by a PNG, JPEG, BMP, TIFF or WebP header; None for anything else."""
    head = bytes(data[:16])
    try:
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png(data)
        if head.startswith(b"\xff\xd8\xff"):
            return _jpeg(data)
        if head.startswith(b"BM"):
            return _bmp(data)
        if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
            return _tiff(data)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return _webp(data)
    except struct.error:
        return None
    return None


def check_image_size(path: object, width: int, height: int) -> None:
    """VCEError naming ``path`` if ``width`` x ``height`` is above :data:`MAX_IMAGE_PIXELS`."""
    if width * height > MAX_IMAGE_PIXELS:
        raise VCEError(
            f"{path}: the image is {width}x{height} pixels ({width * height / 1e6:.0f} Mpx), above vce's "
            f"limit of {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx for one frame (a decompression bomb?); capsule "
            "frames are far smaller: remove the file or resize it"
        )
