"""Image bytes -> the 28x28 tensor the predictor takes (pure: OpenCV + numpy, no I/O).

Reads: the bytes of one image object (PNG, JPEG, WebP, BMP, TIFF or GIF).
Writes: nothing; returns a (28, 28) float32 array in [0, 1], white ink on
black, or raises one of the :class:`streamapp.errors.ImageError` types.

Before any pixel is decoded the header is parsed by hand (``image_size``)
for two checks OpenCV does not make: width x height against ``max_pixels``
(a 30000x30000 PNG of a few KB would otherwise allocate gigabytes), and that
the file is complete (``cv2.imdecode`` returns a half-grey picture for a
truncated JPEG or PNG rather than failing). Formats whose header we do not
parse are refused instead of decoded blind.

Two modes:

* ``"kserve-sample"``: exactly the KServe sample's transformer: grayscale,
  ``255 - img``, ``cv2.resize`` to 28x28, ``/ 255``. Only right for dark
  digits on a white image that is already tightly cropped.
* ``"mnist"`` (default): the normalization MNIST itself was made with, applied
  to photographs: find the ink whatever its polarity, flatten uneven paper,
  crop the digit, fit it in 20x20 keeping its aspect ratio, and centre its
  centre of mass in the 28x28 field.
"""

from __future__ import annotations

import logging
import struct
import zlib

import cv2
import numpy as np

from streamapp.errors import EmptyImage, ImageTooLarge, UndecodableImage

logger = logging.getLogger(__name__)

MODES = ("mnist", "kserve-sample")
DEFAULT_MAX_PIXELS = 40_000_000

#: longest side the "mnist" path works at; larger photos are shrunk first
_WORK_SIDE = 1024
#: stroke width in the 28x28 output: MNIST's median (by ``stroke_width``) and
#: the thinnest the model is left to cope with unaided
_MNIST_STROKE = 2.2
_MIN_STROKE = 1.5
#: where MNIST puts the centre of mass (x, y), measured on the training digits
_MNIST_CENTRE = (14.0, 14.0)


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


def _checked(data: bytes, max_pixels: int) -> tuple[str, tuple[int, int]]:
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


def _decode(data: bytes, flags: int) -> np.ndarray:
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as exc:
        raise UndecodableImage(f"OpenCV cannot decode it: {exc.err}") from None
    if image is None or image.size == 0:
        raise UndecodableImage("OpenCV cannot decode it")
    return image


# -- the MNIST normalization (pure image math) -------------------------------------


def _unit_scale(image: np.ndarray) -> np.ndarray:
    """Any decoded depth -> float32 in [0, 1]."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float32) / float(np.iinfo(image.dtype).max)
    return np.clip(np.nan_to_num(image.astype(np.float32)), 0.0, 1.0)


def to_gray(image: np.ndarray) -> np.ndarray:
    """Decoded image (any depth; gray, BGR or BGRA) -> float32 gray in [0, 1].

    Transparency: a transparent pixel shows whatever is behind it and its own
    colour means nothing (it is often black), so the picture is composited on
    the backdrop that makes transparent areas read as *paper*:

    * mostly opaque (a photo with cut-out margins): the opaque pixels are the
      paper, so each transparent pixel takes the shade of the opaque paper
      around it (a flat fill would draw edges where the light is uneven);
    * mostly transparent (strokes drawn on a transparent sheet): the opaque
      pixels are the ink, so the backdrop contrasts with them (white behind
      dark strokes, black behind light ones).
    """
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return _unit_scale(image)
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        image = _unit_scale(image)
    # to one channel at the decoded depth first: a big photo is then converted
    # to float32 once, not three or four times
    gray = _unit_scale(cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_BGR2GRAY))
    if image.shape[2] != 4:
        return gray
    alpha = _unit_scale(image[:, :, 3])
    if alpha.min() >= 1.0:
        return gray
    opaque = alpha > 0.5
    if not opaque.any():
        raise EmptyImage("no ink: the image is fully transparent")
    shade = float(np.median(gray[opaque]))
    if opaque.mean() >= 0.5:
        backdrop = _surrounding_shade(gray, alpha, shade)
    else:
        backdrop = 1.0 if shade < 0.5 else 0.0
    return gray * alpha + backdrop * (1.0 - alpha)


def _surrounding_shade(gray: np.ndarray, alpha: np.ndarray, default: float) -> np.ndarray:
    """Alpha-weighted local mean of ``gray`` (normalized convolution), on a 64 px copy."""
    height, width = gray.shape
    size = (max(1, round(width * 64 / max(height, width))), max(1, round(height * 64 / max(height, width))))
    weight = cv2.GaussianBlur(cv2.resize(alpha, size, interpolation=cv2.INTER_AREA), (0, 0), 4)
    total = cv2.GaussianBlur(cv2.resize(gray * alpha, size, interpolation=cv2.INTER_AREA), (0, 0), 4)
    shade = np.where(weight > 1e-3, total / np.maximum(weight, 1e-3), default).astype(np.float32)
    return cv2.resize(shade, (width, height), interpolation=cv2.INTER_LINEAR)


def _kth_largest(values: np.ndarray) -> float:
    """The k-th largest value: ignores a few hot pixels, yet still sees a
    small digit that covers well under 1% of a big photo."""
    flat = values.ravel()
    k = min(max(3, flat.size // 5000), 50)
    return float(np.partition(flat, flat.size - k)[flat.size - k]) if flat.size > k else float(flat.max())


def ink_image(gray: np.ndarray) -> np.ndarray:
    """Gray in [0, 1] -> ink strength over a zero background, either polarity.

    Signed: the background keeps its noise around zero, so that noise can be
    measured (clipping at zero first would hide half of it).

    Everything about the paper is estimated on a copy shrunk to 64 px:

    * polarity: a median filter gives a background that favours neither
      dark nor light; the ink is the side whose strongest departures from
      it are clearly larger (global percentiles are fooled by uneven light);
    * the paper's brightness (uneven light, tint, vignetting): a grey
      opening wider than any stroke. Unlike the median it never takes a
      thick stroke of a tightly cropped digit for paper.
    """
    height, width = gray.shape
    scale = 64.0 / max(height, width)
    shrunk = scale < 1.0
    if shrunk:
        small = cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    else:
        small = gray
    small = cv2.GaussianBlur(small, (0, 0), 1.0)

    def full(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR) if shrunk else image

    median = cv2.medianBlur((np.clip(small, 0, 1) * 255).round().astype(np.uint8), 15).astype(np.float32) / 255
    residual = gray - full(median)
    brighter, darker = _kth_largest(residual), _kth_largest(-residual)
    if abs(brighter - darker) > 0.25 * max(brighter, darker):
        light = brighter > darker
    else:
        # a tie: thick strokes filled the median's window, so the residual
        # shows them both ways; then the majority (the median pixel) is paper
        # and the ink is on the side of the longer tail
        low, middle, high = np.percentile(gray, (0.5, 50, 99.5))
        light = high - middle > middle - low
    ink, small = (gray, small) if light else (1.0 - gray, 1.0 - small)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
    # the light keeps its slope past the edge (odd reflection: 2 * edge - mirror);
    # with a flat or mirrored border the opening clips a vignette's rise at the
    # edge, and the clipped part would look like a stroke along the border
    padded = np.pad(small, _PAD, mode="reflect", reflect_type="odd") if shrunk and min(small.shape) > _PAD else small
    # opening = min then max filter: drops strokes thinner than the kernel
    background = cv2.morphologyEx(padded, cv2.MORPH_OPEN, kernel, borderType=cv2.BORDER_REPLICATE)
    background = cv2.GaussianBlur(background, (0, 0), 3.0)
    if padded is not small:
        background = background[_PAD:-_PAD, _PAD:-_PAD]
    return ink - full(np.ascontiguousarray(background))


#: margin for the background estimate: the opening's radius plus the blur's reach
_PAD = 16


def digit_mask(ink: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Binary mask of the digit's strokes, plus the background floor and ink level.

    ``ink`` is :func:`ink_image`'s signed output. Raises EmptyImage when
    nothing stands out from the background noise.
    """
    flat = ink.ravel()
    median = float(np.median(flat))
    # noise from the median absolute deviation: robust while ink is a minority
    noise = 1.4826 * float(np.median(np.abs(flat - median)))
    peak = _kth_largest(flat)
    if peak < max(0.08, median + 8 * noise):
        raise EmptyImage("no ink: the image is blank")
    otsu, _ = cv2.threshold((np.clip(ink / peak, 0, 1) * 255).astype(np.uint8), 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    threshold = max(otsu / 255.0 * peak, median + 5 * noise, 0.25 * peak)
    mask = (ink > threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        raise EmptyImage("no ink: the image is blank")
    areas = stats[1:, cv2.CC_STAT_AREA]
    # specks: anything much smaller than the digit's main stroke
    keep = np.flatnonzero(areas >= max(2, 0.08 * areas.max())) + 1
    mask = np.isin(labels, keep)
    level = float(np.percentile(ink[mask], 75))
    return mask, median + 2 * noise, level


def centre_digit(digit: np.ndarray) -> np.ndarray:
    """A cropped digit (ink >= 0) -> 28x28: fit in 20x20, centre of mass at the centre."""
    height, width = digit.shape
    scale = 20.0 / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # area averaging when shrinking is the anti-aliasing MNIST's own digits show
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    fitted = cv2.resize(digit, size, interpolation=interpolation)
    total = float(fitted.sum())
    if total <= 0:
        raise EmptyImage("no ink after scaling")
    ys, xs = np.indices(fitted.shape, dtype=np.float64)
    cy, cx = float((ys * fitted).sum() / total), float((xs * fitted).sum() / total)
    shift = np.float32([[1, 0, _MNIST_CENTRE[0] - cx], [0, 1, _MNIST_CENTRE[1] - cy]])
    out = cv2.warpAffine(fitted, shift, (28, 28), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return np.clip(out, 0.0, 1.0)


def stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in pixels: 2 x area / outline (a stroke w wide, L long has area wL, outline 2L)."""
    mask = mask.astype(np.uint8)
    inner = cv2.erode(mask, _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    outline = int(mask.sum()) - int(inner.sum())
    return 2.0 * float(mask.sum()) / max(outline, 1)


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def normalize_mnist(gray: np.ndarray) -> np.ndarray:
    """Gray image in [0, 1] (any size, any polarity) -> MNIST-style 28x28."""
    height, width = gray.shape
    if max(height, width) > _WORK_SIDE:
        scale = _WORK_SIDE / max(height, width)
        gray = cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    ink = ink_image(gray)
    mask, floor, level = digit_mask(ink)
    ink = np.maximum(ink, 0.0)
    # strokes at full strength, background and specks at zero, edges kept soft
    near = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    clean = np.where(near, np.clip((ink - floor) / max(level - floor, 1e-6), 0.0, 1.0), 0.0).astype(np.float32)
    ys, xs = np.nonzero(mask)
    scale = 20.0 / max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
    width = stroke_width(mask)
    if width * scale < _MIN_STROKE:
        # a fine pen on a big digit would shrink to faint hairlines; thicken it
        # to MNIST's ~2 px strokes, which is what the model knows
        grow = round(_MNIST_STROKE / scale - width)
        if grow >= 2:
            clean = cv2.dilate(clean, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow)))
    ys, xs = np.nonzero(clean > 0)
    if len(ys) == 0:
        raise EmptyImage("no ink: the image is blank")
    return centre_digit(clean[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])


# -- the entry point ---------------------------------------------------------------


def to_tensor(data: bytes, *, mode: str = "mnist", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Image bytes -> (28, 28) float32 in [0, 1], white ink on black."""
    if mode not in MODES:
        raise ValueError(f"unknown transform mode {mode!r}; expected one of {MODES}")
    kind, (width, height) = _checked(data, max_pixels)
    if mode == "kserve-sample":
        img = _decode(data, cv2.IMREAD_GRAYSCALE)
        if img.min() == img.max():
            raise EmptyImage("no ink: the image is one flat colour")
        # the sample's exact arithmetic: uint8 255 - img, bilinear resize, / 255.0
        return (cv2.resize(255 - img, (28, 28)).flatten() / 255.0).reshape(28, 28).astype(np.float32)
    return normalize_mnist(to_gray(_decode(data, _mnist_flags(kind, max(width, height)))))


def _mnist_flags(kind: str, side: int) -> int:
    """How to decode for the "mnist" path.

    JPEG has no alpha and 8 bits only, so it is decoded straight to gray,
    which also applies the EXIF orientation (UNCHANGED would skip it); a big
    one is decoded at 1/2, 1/4 or 1/8 scale by the JPEG decoder itself, as
    long as it stays at least ``_WORK_SIDE`` px. Other formats keep alpha and
    16-bit depth.
    """
    if kind != "jpeg":
        return cv2.IMREAD_UNCHANGED
    for factor, flags in ((8, cv2.IMREAD_REDUCED_GRAYSCALE_8), (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
                          (2, cv2.IMREAD_REDUCED_GRAYSCALE_2)):
        if side // factor >= _WORK_SIDE:
            return flags
    return cv2.IMREAD_GRAYSCALE
