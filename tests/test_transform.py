"""streamapp.transform: image bytes -> 28x28 tensors, and every way that can fail.

Pure tests: digits are drawn with OpenCV in memory; no model, no servers.
"""

from __future__ import annotations

import resource
import struct
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest

from streamapp import transform
from streamapp.errors import EmptyImage, ImageTooLarge, UndecodableImage
from streamapp.transform import image_size, to_tensor

# -- making test images ----------------------------------------------------------


def glyph(text: str = "4", size: int = 200, thickness: int | None = None) -> np.ndarray:
    """White-on-black ink in [0, 1]: ``text`` drawn about ``size`` px tall, anti-aliased."""
    canvas = np.zeros((size, size), np.uint8)
    scale = size / 32
    (width, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness or max(1, size // 14))
    origin = ((size - width) // 2, (size + height) // 2)
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness or max(1, size // 14), cv2.LINE_AA)
    return canvas.astype(np.float32) / 255


def on_paper(ink: np.ndarray, paper=(0.92, 0.92, 0.92), pen=(0.1, 0.1, 0.1), canvas=None, at=(0, 0), light=None,
             noise=0.0, seed=0) -> np.ndarray:
    """Dark pen ``ink`` on BGR paper (float [0, 1]), optionally placed on a bigger sheet."""
    height, width = canvas or ink.shape
    alpha = np.zeros((height, width), np.float32)
    alpha[at[0] : at[0] + ink.shape[0], at[1] : at[1] + ink.shape[1]] = ink
    image = np.array(paper, np.float32) * (1 - alpha[..., None]) + np.array(pen, np.float32) * alpha[..., None]
    if light is not None:
        image *= light[..., None]
    if noise:
        image += np.random.default_rng(seed).normal(0, noise, image.shape).astype(np.float32)
    return np.clip(image, 0, 1)


def encode(image: np.ndarray, ext: str = ".png", params: tuple = (), depth: int = 8) -> bytes:
    """Float [0, 1] image -> encoded bytes at 8 or 16 bits."""
    pixels = (image * 255).round().astype(np.uint8) if depth == 8 else (image * 65535).round().astype(np.uint16)
    ok, buf = cv2.imencode(ext, pixels, list(params))
    assert ok, ext
    return buf.tobytes()


def similar(a: np.ndarray, b: np.ndarray, at_least: float = 0.9) -> bool:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) >= at_least


def ink_box(tensor: np.ndarray, level: float = 0.1) -> tuple[int, int]:
    ys, xs = np.nonzero(tensor > level)
    return ys.max() - ys.min() + 1, xs.max() - xs.min() + 1


def centre_of_mass(tensor: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(tensor.shape)
    return float((ys * tensor).sum() / tensor.sum()), float((xs * tensor).sum() / tensor.sum())


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """The "4" as a clean 8-bit gray PNG, dark on white, through the default mode."""
    return to_tensor(encode(1 - glyph()))


# -- formats and colour modes --------------------------------------------------------

FORMATS = [
    (".png", (), 8), (".png", (), 16),
    (".jpg", (cv2.IMWRITE_JPEG_QUALITY, 90), 8), (".jpg", (cv2.IMWRITE_JPEG_QUALITY, 55), 8),
    (".webp", (cv2.IMWRITE_WEBP_QUALITY, 90), 8), (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101), 8),
    (".bmp", (), 8), (".tif", (), 8), (".tif", (), 16),
]


@pytest.mark.parametrize("colour", ["gray", "bgr"])
@pytest.mark.parametrize(("ext", "params", "depth"), FORMATS)
def test_every_format_and_depth_gives_the_same_digit(reference, ext, params, depth, colour):
    image = on_paper(glyph())
    if colour == "gray":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    data = encode(image, ext, params, depth)
    tensor = to_tensor(data)
    assert tensor.shape == (28, 28) and tensor.dtype == np.float32
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0
    assert tensor.max() > 0.9  # strokes at full strength, like MNIST
    assert similar(tensor, reference, 0.95)


@pytest.mark.parametrize("depth", [8, 16])
def test_rgba_opaque_and_with_transparent_margins(reference, depth):
    image = on_paper(glyph(), canvas=(260, 260), at=(30, 30))
    alpha = np.ones(image.shape[:2], np.float32)
    assert similar(to_tensor(encode(np.dstack([image, alpha]), depth=depth)), reference, 0.95)
    # a cut-out: transparent margins whose colour is black must read as paper, not ink
    alpha[:12] = 0
    alpha[:, -12:] = 0
    image[alpha == 0] = 0
    assert similar(to_tensor(encode(np.dstack([image, alpha]), depth=depth)), reference, 0.95)


@pytest.mark.parametrize("stroke", [0.0, 1.0, 0.6])
def test_strokes_on_a_transparent_sheet_are_ink_whatever_their_colour(reference, stroke):
    ink = glyph()
    colour = np.full((*ink.shape, 3), stroke, np.float32)
    # transparent pixels hold black, as most editors write them
    colour[ink == 0] = 0
    assert similar(to_tensor(encode(np.dstack([colour, ink]))), reference, 0.95)


def test_polarity_light_ink_on_dark_equals_dark_ink_on_light(reference):
    light_on_dark = encode(glyph())
    assert similar(to_tensor(light_on_dark), reference, 0.97)


def test_tinted_unevenly_lit_noisy_blurred_paper(reference):
    height = width = 400
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) / 400
    light = 1.0 - 0.45 * xs - 0.2 * ((ys - 0.5) ** 2)  # a strong gradient and a falloff
    image = on_paper(glyph(size=150), paper=(0.70, 0.86, 0.93), pen=(0.45, 0.15, 0.1), canvas=(height, width),
                     at=(200, 40), light=light, noise=0.03)
    image = cv2.GaussianBlur(image, (0, 0), 2.0)
    data = encode(image, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 60))
    assert similar(to_tensor(data), reference, 0.9)


@pytest.mark.parametrize("centre", [(0.5, 1.0), (0.0, 0.5), (1.0, 1.0)])
def test_dark_vignette_at_the_border_is_not_ink(reference, centre):
    # light falling off steeply towards one edge or corner of a photo: the
    # darkening along the border must not be taken for a stroke
    ys, xs = np.mgrid[0:400, 0:400].astype(np.float32) / 400
    light = 1.0 - 0.9 * ((ys - 1 + centre[0]) ** 2 + (xs - 1 + centre[1]) ** 2)
    image = on_paper(glyph(size=90), canvas=(400, 400), at=(150, 150), light=np.clip(light, 0.3, 1), noise=0.01)
    assert similar(to_tensor(encode(image)), reference, 0.9)


def test_specks_do_not_change_the_crop(reference):
    image = on_paper(glyph(), canvas=(300, 300), at=(50, 50))
    for y, x in [(5, 5), (290, 20), (10, 280), (280, 285)]:
        cv2.circle(image, (x, y), 2, (0.1, 0.1, 0.1), -1)
    assert similar(to_tensor(encode(image)), reference, 0.97)


@pytest.mark.parametrize(("size", "canvas", "at"), [(24, (60, 90), (20, 50)), (90, (300, 200), (0, 0)),
                                                   (260, (600, 900), (330, 600)), (400, (400, 400), (0, 0))])
def test_fits_20x20_and_centres_the_centre_of_mass(size, canvas, at):
    tensor = to_tensor(encode(on_paper(glyph(size=size), canvas=canvas, at=at)))
    assert max(ink_box(tensor)) in (19, 20, 21)
    cy, cx = centre_of_mass(tensor)
    assert abs(cy - 14) < 0.6 and abs(cx - 14) < 0.6


def test_keeps_the_aspect_ratio_of_a_tall_digit():
    ink = np.zeros((200, 200), np.float32)
    cv2.line(ink, (100, 20), (100, 180), 1.0, 14, cv2.LINE_AA)  # a "1": 160 tall, 14 wide
    height, width = ink_box(to_tensor(encode(1 - ink)))
    assert height in (19, 20, 21) and width <= 4


def seven(size: int, thickness: int) -> np.ndarray:
    """A "7" drawn with a pen ``thickness`` px wide, white on black."""
    ink = np.zeros((size, size), np.uint8)
    points = (np.array([[0.25, 0.15], [0.75, 0.15], [0.45, 0.85]]) * size).astype(np.int32)
    cv2.polylines(ink, [points], False, 255, thickness, cv2.LINE_AA)
    return ink.astype(np.float32) / 255


def test_a_fine_pen_is_thickened_to_mnist_strokes():
    normal = to_tensor(encode(1 - seven(300, 30)))
    thin = to_tensor(encode(1 - seven(300, 3)))
    assert similar(thin, normal, 0.85)
    assert thin.sum() > 0.6 * normal.sum()  # not faint hairlines


def test_plain_mnist_style_input_is_left_almost_alone(reference):
    again = to_tensor(encode(reference))  # already a white-on-black 28x28 MNIST-style digit
    assert np.abs(again - reference).mean() < 0.02


def test_large_photos_are_shrunk_before_the_work():
    image = on_paper(glyph(size=900), canvas=(2400, 3000), at=(700, 1000))
    tensor = to_tensor(encode(image, ".jpg"))
    assert max(ink_box(tensor)) in (19, 20, 21)


# -- the KServe sample's transform ---------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp", ".tif"])
def test_kserve_sample_mode_is_exactly_the_sample_formula(tmp_path, ext):
    image = on_paper(glyph(size=120), canvas=(150, 130), at=(10, 5), paper=(0.9, 0.8, 0.7), noise=0.02)
    data = encode(image, ext)
    path = tmp_path / f"digit{ext}"
    path.write_bytes(data)
    # the sample's image_transform, verbatim but for the returned shape
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    g = cv2.resize(255 - img, (28, 28))
    g = g.flatten() / 255.0
    expected = np.asarray(g, dtype=np.float32).reshape(28, 28)
    tensor = to_tensor(data, mode="kserve-sample")
    assert tensor.dtype == np.float32 and tensor.shape == (28, 28)
    assert np.array_equal(tensor, expected)


def test_unknown_mode_is_a_programming_error():
    with pytest.raises(ValueError, match="mode"):
        to_tensor(encode(glyph()), mode="imagenet")


# -- errors ------------------------------------------------------------------------------


def test_zero_bytes_is_empty():
    with pytest.raises(EmptyImage):
        to_tensor(b"")


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp"])
@pytest.mark.parametrize("noise", [0.0, 0.03])
def test_blank_paper_is_empty(ext, noise):
    xs = np.mgrid[0:300, 0:300][1].astype(np.float32) / 300
    light = 1.0 - 0.3 * xs  # unevenly lit, but nothing written on it
    blank = on_paper(np.zeros((300, 300), np.float32), paper=(0.8, 0.9, 0.95), light=light, noise=noise)
    with pytest.raises(EmptyImage):
        to_tensor(encode(blank, ext))


@pytest.mark.parametrize("mode", ["mnist", "kserve-sample"])
def test_flat_colour_is_empty(mode):
    with pytest.raises(EmptyImage):
        to_tensor(encode(np.full((50, 50), 0.5, np.float32)), mode=mode)


def test_fully_transparent_is_empty():
    with pytest.raises(EmptyImage):
        to_tensor(encode(np.zeros((40, 40, 4), np.float32)))


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

    monkeypatch.setattr(transform.cv2, "imdecode", no_decoding)
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


# -- image_size --------------------------------------------------------------------------


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
