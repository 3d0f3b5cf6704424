"""Image bytes -> a decoded picture, after checks OpenCV does not make (pure, no I/O).

Reads: the bytes of one image object (PNG, JPEG, WebP, BMP, TIFF or GIF).
Writes: nothing; returns the decoded array, or raises one of the
:class:`streamapp.errors.ImageError` types.

Before any pixel is decoded the header is parsed here (``image_size``) for two
checks: width x height against ``max_pixels`` (a 30000x30000 PNG of a few KB
would otherwise allocate gigabytes), and that the file is complete
(``cv2.imdecode`` returns a half-grey picture for a truncated JPEG or PNG
rather than failing). Formats whose header is not parsed here are refused
instead of decoded blind.
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

from streamapp.errors import EmptyImage, ImageTooLarge, UndecodableImage

DEFAULT_MAX_PIXELS = 40_000_000


# -- header parsing ------------------------------------------------------------


def _sniff(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


# start-of-frame markers: every SOFn except DHT (C4), JPG (C8) and DAC (CC)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_segments(data: bytes):
    """Yield (marker, offset) of each marker segment up to and including SOS."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # no length field
            pos += 2
            continue
        yield marker, pos
        if marker == 0xDA:
            return
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    for marker, pos in _jpeg_segments(data):
        if marker in _SOF and pos + 9 <= len(data):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            # height 0 means "defined later by a DNL marker": not knowable up front
            return (width, height) if height else None
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    header = struct.unpack("<I", data[14:18])[0]
    if header == 12:  # OS/2 BITMAPCOREHEADER
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)  # negative height: rows stored top-down


_TIFF_TYPES = {3: ("H", 2), 4: ("I", 4)}  # SHORT, LONG: the types sizes and offsets use


def _tiff_tags(data: bytes) -> dict[int, tuple[int, ...]] | None:
    """Integer tags of the first IFD, or None if it cannot be read."""
    order = "<" if data[:2] == b"II" else ">"
    if len(data) < 8:
        return None
    ifd = struct.unpack(order + "I", data[4:8])[0]
    if ifd + 2 > len(data):
        return None
    count = struct.unpack(order + "H", data[ifd : ifd + 2])[0]
    if ifd + 2 + 12 * count + 4 > len(data):  # entries, then the next-IFD offset
        return None
    tags: dict[int, tuple[int, ...]] = {}
    for index in range(count):
        entry = data[ifd + 2 + 12 * index : ifd + 14 + 12 * index]
        tag, kind, number = struct.unpack(order + "HHI", entry[:8])
        if kind not in _TIFF_TYPES:
            continue
        code, size = _TIFF_TYPES[kind]
        if number * size <= 4:
            raw = entry[8 : 8 + number * size]
        else:
            offset = struct.unpack(order + "I", entry[8:12])[0]
            raw = data[offset : offset + number * size]
            if len(raw) != number * size:
                return None
        tags[tag] = struct.unpack(f"{order}{number}{code}", raw)
    return tags


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    tags = _tiff_tags(data)
    if not tags or 256 not in tags or 257 not in tags:
        return None
    return tags[256][0], tags[257][0]


def _gif_size(data: bytes) -> tuple[int, int] | None:
    return struct.unpack("<HH", data[6:10]) if len(data) >= 10 else None


_SIZERS = {
    "png": _png_size, "jpeg": _jpeg_size, "webp": _webp_size,
    "bmp": _bmp_size, "tiff": _tiff_size, "gif": _gif_size,
}


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the header alone; None if the format is unknown."""
    kind = _sniff(data)
    return _SIZERS[kind](data) if kind else None


# -- completeness: catching what cv2.imdecode would half-decode ------------------


def _png_complete(data: bytes) -> bool:
    pos = 8
    while pos + 12 <= len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        end = pos + 12 + length
        if end > len(data):
            return False
        body = data[pos + 4 : pos + 8 + length]  # chunk type + data, what the CRC covers
        if zlib.crc32(body) != struct.unpack(">I", data[end - 4 : end])[0]:
            return False
        if body[:4] == b"IEND":
            return True
        pos = end
    return False


def _jpeg_complete(data: bytes) -> bool:
    sos = [pos for marker, pos in _jpeg_segments(data) if marker == 0xDA]
    # after SOS a 0xFF byte is always stuffed or a marker, so FFD9 there is the
    # real end of image (an EXIF thumbnail's FFD9 sits before the first SOS);
    # bytes after it (camera trailers) are allowed
    return bool(sos) and data.rfind(b"\xff\xd9") > sos[0]


def _webp_complete(data: bytes) -> bool:
    return len(data) >= 8 + struct.unpack("<I", data[4:8])[0]


def _bmp_complete(data: bytes) -> bool:
    size = _bmp_size(data)
    if size is None or len(data) < 30:
        return False
    offset = struct.unpack("<I", data[10:14])[0]
    if struct.unpack("<I", data[14:18])[0] == 12:
        bits, compression = struct.unpack("<H", data[24:26])[0], 0
    else:
        bits = struct.unpack("<H", data[28:30])[0]
        compression = struct.unpack("<I", data[30:34])[0] if len(data) >= 34 else 0
    if compression in (0, 3):  # uncompressed rows, padded to 4 bytes
        width, height = size
        return len(data) >= offset + (width * bits + 31) // 32 * 4 * height
    declared = struct.unpack("<I", data[2:6])[0]
    return len(data) >= max(declared, offset + 1)


def _tiff_complete(data: bytes) -> bool:
    tags = _tiff_tags(data)
    if not tags:
        return False
    for offsets, counts in ((273, 279), (324, 325)):  # strips, tiles
        if offsets in tags:
            if counts not in tags or len(tags[offsets]) != len(tags[counts]):
                return False
            return all(o + c <= len(data) for o, c in zip(tags[offsets], tags[counts], strict=True))
    return False


def _gif_complete(data: bytes) -> bool:
    return data.rstrip(b"\x00").endswith(b"\x3b")  # the trailer byte


_COMPLETE = {
    "png": _png_complete, "jpeg": _jpeg_complete, "webp": _webp_complete,
    "bmp": _bmp_complete, "tiff": _tiff_complete, "gif": _gif_complete,
}


def checked(data: bytes, max_pixels: int) -> tuple[str, tuple[int, int]]:
    """The format name and size, once both and completeness are known to be fine."""
    if not data:
        raise EmptyImage("zero bytes")
    kind = _sniff(data)
    if kind is None:
        raise UndecodableImage("not a PNG, JPEG, WebP, BMP, TIFF or GIF image")
    size = _SIZERS[kind](data)
    if size is None:
        raise UndecodableImage(f"{kind} header is unreadable")
    width, height = size
    if width <= 0 or height <= 0:
        raise UndecodableImage(f"{kind} header says {width}x{height}")
    if width * height > max_pixels:
        raise ImageTooLarge(f"{width}x{height} = {width * height} pixels, limit {max_pixels}")
    if not _COMPLETE[kind](data):
        raise UndecodableImage(f"{kind} data is truncated or corrupt")
    return kind, size


def decode(data: bytes, flags: int) -> np.ndarray:
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as exc:
        raise UndecodableImage(f"OpenCV cannot decode it: {exc.err}") from None
    if image is None or image.size == 0:
        raise UndecodableImage("OpenCV cannot decode it")
    return image


def photo_flags(kind: str, side: int, work_side: int) -> int:
    """How to decode for the "mnist" path.

    JPEG has no alpha and 8 bits only, so it is decoded to BGR, which also
    applies the EXIF orientation (UNCHANGED would skip it); a big one is
    decoded at 1/2, 1/4 or 1/8 scale by the JPEG decoder itself, as long as it
    stays at least ``work_side`` px. Other formats keep alpha and 16-bit
    depth. Colour is kept: coloured ink shows best in one channel
    (:func:`streamapp.imaging.normalize.ink_gray`).
    """
    if kind != "jpeg":
        return cv2.IMREAD_UNCHANGED
    for factor, flags in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                          (2, cv2.IMREAD_REDUCED_COLOR_2)):
        if side // factor >= work_side:
            return flags
    return cv2.IMREAD_COLOR
