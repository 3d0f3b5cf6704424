"""Header checks and decoding: sizes, completeness, pixel limits, orientation, and every way a file can be unusable.

Pure: images are made with OpenCV in memory.
"""

from __future__ import annotations

import resource
import struct
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest

from streamapp.errors import ImageTooLarge, UndecodableImage
from streamapp.imaging import formats
from streamapp.imaging.formats import image_size
from streamapp.imaging.tensor import to_tensor
from tests.imaging.drawing import encode, glyph, on_paper, seven, similar


@pytest.mark.parametrize("data", [b"hello, world", b"\x00" * 100, b"<svg xmlns='http://www.w3.org/2000/svg'/>"])
def test_not_an_image_is_undecodable(data):
    with pytest.raises(UndecodableImage):
        to_tensor(data)


def test_formats_whose_size_we_cannot_check_are_refused():
    # OpenCV decodes PGM, but we do not parse its header, so it is not decoded blind
    data = encode(glyph(size=40), ".pgm")
    assert image_size(data) is None
    with pytest.raises(UndecodableImage):
        to_tensor(data)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".bmp", ".tif"])
@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9, 0.99, -1])
def test_truncated_files_are_undecodable(ext, keep):
    data = encode(on_paper(glyph(size=100), noise=0.05), ext)
    cut = len(data) - 1 if keep == -1 else int(len(data) * keep)
    for mode in ("mnist", "kserve-sample"):
        with pytest.raises(UndecodableImage):
            to_tensor(data[:cut], mode=mode)


def test_png_with_a_bad_crc_is_undecodable():
    data = bytearray(encode(glyph(size=60)))
    data[len(data) // 2] ^= 0xFF  # inside IDAT
    with pytest.raises(UndecodableImage):
        to_tensor(bytes(data))


def test_jpeg_with_trailing_bytes_after_the_end_is_fine(reference):
    data = encode(1 - glyph(), ".jpg") + b"camera trailer"
    assert similar(to_tensor(data), reference, 0.95)


def _png_header(width: int, height: int) -> bytes:
    """A PNG that is only a header claiming ``width`` x ``height``, plus a tiny IDAT and IEND."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b"")


def test_huge_png_header_is_refused_before_any_decoding(monkeypatch):
    data = _png_header(30000, 30000)  # 900 megapixels in 100 bytes
    assert image_size(data) == (30000, 30000)

    def no_decoding(*args, **kwargs):
        raise AssertionError("cv2.imdecode must not run for an oversized image")

    monkeypatch.setattr(formats.cv2, "imdecode", no_decoding)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        for mode in ("mnist", "kserve-sample"):
            with pytest.raises(ImageTooLarge, match="30000x30000"):
                to_tensor(data, mode=mode)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 50_000  # KiB


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".bmp", ".tif"])
def test_pixel_limit_is_configurable(ext):
    data = encode(on_paper(glyph(size=100), canvas=(100, 120)), ext)
    assert to_tensor(data, max_pixels=12_000).shape == (28, 28)
    with pytest.raises(ImageTooLarge):
        to_tensor(data, max_pixels=11_999)


@pytest.mark.parametrize(("ext", "params"), [(".png", ()), (".jpg", ()), (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
                                             (".webp", (cv2.IMWRITE_WEBP_QUALITY, 80)),
                                             (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101)), (".bmp", ()), (".tif", ())])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_image_size_reads_width_and_height(ext, params, channels):
    if channels == 4 and ext in (".jpg", ".bmp"):
        pytest.skip("no alpha in this format's OpenCV encoder")
    image = np.random.default_rng(1).random((37, 53, channels) if channels > 1 else (37, 53)).astype(np.float32)
    assert image_size(encode(image, ext, params)) == (53, 37)


def test_image_size_of_headers_claiming_huge_images():
    gif = b"GIF89a" + struct.pack("<HH", 40000, 30000) + b"\x00" * 10
    bmp = b"BM" + b"\x00" * 12 + struct.pack("<IiiHH", 40, 40000, -30000, 1, 24) + b"\x00" * 30
    webp = b"RIFF" + struct.pack("<I", 30) + b"WEBPVP8X" + b"\x00" * 8 + (39999).to_bytes(3, "little") + (29999).to_bytes(3, "little")
    jpeg = b"\xff\xd8\xff\xc0\x00\x11\x08" + struct.pack(">HH", 30000, 40000) + b"\x03" + b"\x00" * 9
    tiff = b"II*\x00" + struct.pack("<IH", 8, 2) + struct.pack("<HHII", 256, 4, 1, 40000) + struct.pack("<HHII", 257, 4, 1, 30000) + b"\x00" * 4
    for data in (gif, bmp, webp, jpeg, tiff):
        assert image_size(data) == (40000, 30000)
        with pytest.raises(ImageTooLarge):
            to_tensor(data)


def test_image_size_of_a_gif_and_of_unknown_bytes():
    gif = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
           b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
    assert image_size(gif) == (1, 1)
    assert image_size(b"") is None
    assert image_size(b"not an image") is None


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """``jpeg`` with an APP1 Exif segment holding only an Orientation tag."""
    tiff = b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + b"\x00" * 4
    body = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def test_jpeg_exif_orientation_is_applied():
    upright = on_paper(seven(200, 24))
    # stored rotated 90 degrees counter-clockwise, tagged "rotate 90 clockwise to view"
    stored = cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE)
    data = _with_exif_orientation(encode(stored, ".jpg"), 6)
    assert image_size(data) == (200, 200)
    assert similar(to_tensor(data), to_tensor(encode(upright, ".jpg")), 0.97)
    assert not similar(to_tensor(encode(stored, ".jpg")), to_tensor(encode(upright, ".jpg")), 0.9)
