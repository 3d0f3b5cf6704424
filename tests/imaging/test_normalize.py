"""The MNIST normalisation: the same digit from any format, colour, paper and light; fitted and centred like MNIST.

Pure: digits are drawn with OpenCV in memory; no model, no servers.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from streamapp.errors import EmptyImage
from streamapp.imaging import normalize
from streamapp.imaging.normalize import FAINTEST_INK, _distinct, _line_candidates, normalize_mnist, without_lines
from streamapp.imaging.tensor import to_tensor
from tests.imaging.drawing import centre_of_mass, encode, glyph, ink_box, on_paper, seven, similar

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


# -- ruled and grid lines ---------------------------------------------------------------


def _ruled(canvas: tuple[int, int] = (300, 400), spacing: int = 30, squared: bool = False) -> np.ndarray:
    """Signed ink (as ink_image gives it): faint lines across the page, a strong digit-like blob."""
    ink = np.zeros(canvas, np.float32)
    ink[10::spacing, :] = 0.3
    if squared:
        ink[:, 10::spacing] = 0.3
    ink[100:200, 150:165] = 0.9  # a stroke
    ink[100:112, 150:230] = 0.9  # and a bar, as a 7's
    return ink


@pytest.mark.parametrize("squared", [False, True])
def test_ruled_and_grid_lines_are_taken_out_and_the_digit_kept(squared):
    ink = _ruled(squared=squared)
    cleaned = without_lines(ink)
    assert cleaned[40, 10:100].max() < 0.05  # a line away from the digit: gone
    if squared:
        assert cleaned[250, 40] < 0.05
    assert cleaned[150, 157] > 0.8 and cleaned[105, 200] > 0.8  # the strokes stay
    assert cleaned[130, 157] > 0.8  # where a line crossed the stroke, closed again


def test_lines_of_a_tilted_page_are_taken_out_to_the_corners():
    """A page turned 7 degrees: its lines leave by the top and bottom, and a
    corner cuts some of them short; a single margin line crosses them all."""
    ink = np.zeros((300, 400), np.float32)
    slope = np.tan(np.deg2rad(7))
    for start in range(-60, 300, 24):
        cv2.line(ink, (0, start), (399, round(start + 399 * slope)), 0.3, 2)
    cv2.line(ink, (60, 0), (60 - round(299 * slope), 299), 0.4, 3)  # the margin, square to the lines
    ink[100:200, 200:214] = 0.9  # a stroke the lines cross
    cleaned = without_lines(ink)
    # where a line meets the stroke's end, the line's width under it stays: the stroke's own
    near_stroke = np.zeros_like(ink, bool)
    near_stroke[95:212, 198:216] = True
    left = ((cleaned > 0.05) & ~near_stroke).astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(left)
    # every line gone, those a corner cuts short too; a corner's last few pixels are a speck
    assert stats[1:, cv2.CC_STAT_AREA].max(initial=0) < 20
    assert cleaned[100:200, 200:214].min() > 0.8  # the stroke whole, where lines crossed it as well


def test_converging_lines_of_a_page_seen_at_a_slant_are_all_taken_out():
    """Keystone: the page's lines are not parallel in the photo (here 0 to 5
    degrees from the top one to the bottom one), so no one angle finds them all."""
    ink = np.zeros((300, 400), np.float32)
    for index, start in enumerate(range(20, 300, 40)):
        slope = np.tan(np.deg2rad(index * 5 / 6))
        cv2.line(ink, (0, start), (399, round(start - 399 * slope)), 0.3, 2)
    ink[100:200, 200:214] = 0.9
    cleaned = without_lines(ink)
    # where a line passes by the stroke's end, the line's width over it stays: the stroke's own
    near_stroke = np.zeros_like(ink, bool)
    near_stroke[88:212, 198:216] = True
    _, _, stats, _ = cv2.connectedComponentsWithStats(((cleaned > 0.05) & ~near_stroke).astype(np.uint8))
    assert stats[1:, cv2.CC_STAT_AREA].max(initial=0) < 20
    assert cleaned[100:200, 200:214].min() > 0.8


def test_lines_that_stop_at_a_sheets_edge_inside_the_frame_go_on_the_sheet():
    """A sheet lying tilted on a table, cropped to its box: its lines run from
    its edge to its edge, which is inside the frame (up top, 65% of it)."""
    page = np.zeros((300, 400), np.uint8)
    cv2.fillPoly(page, [np.array([[140, 0], [399, 0], [399, 299], [0, 299]], np.int32)], 1)
    ink = np.zeros((300, 400), np.float32)
    for y in range(20, 300, 30):
        cv2.line(ink, (round(140 * (1 - y / 299)) + 2, y), (399, y), 0.3, 2)  # from the sheet's slanted edge
    ink[100:200, 200:214] = 0.9
    assert without_lines(ink)[50, 300] > 0.2  # measured on the frame, the short lines stay
    cleaned = without_lines(ink, page.astype(bool))
    assert cleaned[50, 300] < 0.05 and cleaned[260, 300] < 0.05
    assert cleaned[100:200, 200:214].min() > 0.8


def test_a_lone_margin_line_beside_the_digit_goes():
    ink = np.zeros((240, 320), np.float32)
    ink[:, 250:253] = 0.5  # a notebook's margin, top to bottom
    ink[80:160, 120:134] = 0.9
    cleaned = without_lines(ink)
    assert cleaned[:, 250:253].max() < 0.05 and cleaned[80:160, 120:134].min() > 0.8


def test_a_thin_one_drawn_edge_to_edge_is_still_a_digit():
    """Nothing but a thin straight stroke from edge to edge looks like a line;
    with nothing else there it is the digit, not an empty image."""
    image = np.ones((120, 60), np.float32)
    image[:, 28:32] = 0.1
    tensor = normalize_mnist(image)
    assert ((tensor > 0.5).sum(axis=1) > 0).sum() >= 18  # a vertical stroke the height of MNIST's digits


def test_one_long_stroke_alone_is_a_digit_not_a_line():
    ink = np.zeros((200, 60), np.float32)
    ink[5:195, 25:35] = 0.9  # a tightly cropped 1, top to bottom
    assert np.array_equal(without_lines(ink), ink)


def test_a_quantised_gradient_is_not_taken_for_lines():
    ink = np.repeat((np.arange(300) // 20 * 0.02).astype(np.float32)[:, None], 400, axis=1)  # shade in steps
    ink[100:200, 150:165] = 0.9
    assert np.array_equal(without_lines(ink), ink)


# -- how faint is still ink (EmptyImage's edge) ---------------------------------------


def _faint_digits(mnist_held_out, contrast: float, noise: float, colour=(0.9, 0.9, 0.9)):
    """One held-out digit of each kind, dark by ``contrast`` on ``colour`` paper, as PNGs."""
    images, labels = mnist_held_out
    for digit in range(10):
        index = int(np.flatnonzero(labels == digit)[3])
        ink = np.clip(cv2.resize(images[index], (200, 200), interpolation=cv2.INTER_CUBIC), 0, 1)
        pen = tuple(level - contrast for level in colour)
        image = on_paper(ink, paper=colour, pen=pen, canvas=(300, 300), at=(50, 50), noise=noise, seed=digit)
        yield digit, encode(np.clip(image, 0, 1))


@pytest.fixture(scope="module")
def model():
    from streamapp.serving.model import DigitModel

    return DigitModel.load()


@pytest.mark.parametrize(("contrast", "noise"), [(FAINTEST_INK + 0.01, 0.0), (0.06, 0.02)])
def test_a_faint_digit_is_read_not_refused(mnist_held_out, model, contrast, noise):
    """Just past the edge (4% of full contrast on clean paper; 6% on grainy paper,
    where 8 x the grain decides): every digit is found, and read right."""
    for digit, data in _faint_digits(mnist_held_out, contrast, noise):
        assert model.predict_proba(to_tensor(data)[None])[0].argmax() == digit


def test_below_the_faintest_ink_is_empty(mnist_held_out):
    """2% of full contrast (5 grey levels) on clean paper: no ink, by the rule."""
    for _, data in _faint_digits(mnist_held_out, FAINTEST_INK - 0.01, 0.0):
        with pytest.raises(EmptyImage, match="no ink"):
            to_tensor(data)


def test_faint_pencil_on_grainy_paper_is_read_and_grain_alone_is_empty():
    """_GRAIN_BLUR: recycled paper's grain (6% per pixel) hides a pencil 3 of
    6% contrast pixel by pixel (refused before, as was one of 15%); averaged
    along its strokes it stands out, and reads as the digit. The same grain
    with no digit stays empty."""
    from tests.imaging.drawing import glyph

    pencil = np.zeros((600, 800), np.float32)
    pencil[150:450, 250:550] = glyph("3", size=300, thickness=10)
    clean = to_tensor(encode(1 - 0.9 * pencil))
    for seed in range(3):
        grain = np.random.default_rng(seed).normal(0, 0.06, pencil.shape).astype(np.float32)
        assert similar(to_tensor(encode(np.clip(0.8 - 0.06 * pencil + grain, 0, 1))), clean, 0.95)
        with pytest.raises(EmptyImage, match="no ink"):
            to_tensor(encode(np.clip(0.8 + grain, 0, 1)))


def test_faint_coloured_ink_on_tinted_paper_is_read(mnist_held_out, model):
    """Blue ballpoint at a quarter of its strength on cream paper: 14% in
    luminance, and darker still in the red channel it darkens most."""
    images, labels = mnist_held_out
    for digit in range(10):
        index = int(np.flatnonzero(labels == digit)[5])
        ink = np.clip(cv2.resize(images[index], (160, 160), interpolation=cv2.INTER_CUBIC), 0, 1) * 0.25
        image = on_paper(ink, paper=(0.8, 0.9, 0.96), pen=(0.8, 0.35, 0.15), canvas=(260, 300), at=(40, 60),
                         noise=0.01, seed=digit)
        tensor = to_tensor(encode(np.clip(image, 0, 1), ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 85)))
        assert model.predict_proba(tensor[None])[0].argmax() == digit


# -- what else is in the frame ----------------------------------------------------------


def test_a_page_edge_and_a_pen_entering_the_frame_are_not_the_digit(mnist_held_out, model):
    """A sheet on a darker table, its corner in view, and a pen from the frame's
    edge: both darker than the digit and bigger, neither is it."""
    images, labels = mnist_held_out
    for digit in range(10):
        index = int(np.flatnonzero(labels == digit)[7])
        frame = np.full((600, 800, 3), 0.35, np.float32)  # the table
        cv2.fillPoly(frame, [np.array([[0, 0], [620, 0], [560, 470], [0, 520]], np.int32)], (0.9, 0.9, 0.9))
        cv2.line(frame, (799, 560), (520, 330), (0.1, 0.1, 0.1), 14)  # the pen, from the edge onto the sheet
        ink = np.clip(cv2.resize(images[index], (120, 120), interpolation=cv2.INTER_CUBIC), 0, 1)
        alpha = np.zeros(frame.shape[:2], np.float32)
        alpha[150:270, 200:320] = ink
        image = frame * (1 - alpha[..., None]) + np.float32(0.1) * alpha[..., None]
        tensor = to_tensor(encode(image, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 90)))
        assert model.predict_proba(tensor[None])[0].argmax() == digit


def test_a_digit_joined_to_the_edge_by_a_faint_line_is_not_clutter():
    """A faint grid line, left by the line finder (fainter than what it marks
    next to a dark digit), runs on to the frame's edge through the digit: the
    digit has not entered the frame, it stays; a speck beside it does not
    become the digit. A pen's end fading out is as wide as the pen: it goes."""
    from streamapp.imaging import normalize
    from tests.imaging.drawing import seven

    ink = np.zeros((600, 800), np.float32)
    ink[299:301, :] = 0.12  # the line, 2 px, edge to edge
    ink[200:400, 300:500] = np.maximum(ink[200:400, 300:500], 0.9 * seven(200, 14))
    ink[420:426, 560:566] = 0.9  # a speck
    cleaned = normalize.without_clutter(ink, 0.06)
    digit = seven(200, 14) > 0.5
    assert np.array_equal(cleaned[200:400, 300:500][digit], ink[200:400, 300:500][digit])
    assert cleaned[299:301, :100].max() <= 0  # the line's run to the edge goes
    # the same strong shape joined to the edge by a faint band as wide as itself: it entered the frame
    band = ink.copy()
    band[299:301, :] = 0
    band[280:320, :440] = np.maximum(band[280:320, :440], 0.12)  # under the 7's stem, into the edge
    assert normalize.without_clutter(band, 0.06)[200:400, 300:500].max() <= 0


def test_a_markers_digit_joined_to_the_edge_by_lines_far_thinner_than_its_strokes_is_not_clutter():
    """_THIN_JOINT_SHARE: a marker's strokes (48 px) on ruled paper whose
    lines (8 px: wider than _THIN_JOINT, but a sixth of the strokes) run
    through the digit to the frame's edges: the digit stays. Joined by a band
    half as wide as its strokes (a shadow's border), it entered the frame."""
    from streamapp.imaging import normalize
    from tests.imaging.drawing import seven

    def scene(joint: int) -> np.ndarray:
        ink = np.zeros((800, 1000), np.float32)
        ink[396 - joint // 2 : 396 + (joint + 1) // 2, :] = 0.12  # the line, edge to edge
        ink[220:580, 320:680] = np.maximum(ink[220:580, 320:680], 0.9 * seven(360, 48))
        ink[620:630, 760:770] = 0.9  # a speck clear of the edges
        return ink

    digit = seven(360, 48) > 0.5
    lined = scene(8)
    assert np.array_equal(normalize.without_clutter(lined, 0.06)[220:580, 320:680][digit], lined[220:580, 320:680][digit])
    assert normalize.without_clutter(scene(24), 0.06)[220:580, 320:680].max() <= 0


def test_a_pen_entering_a_sheet_from_its_edge_is_clutter_on_the_sheet():
    """A sheet lying on a table, cropped to its box: a pen lies across the
    sheet's edge, which is inside the frame. On the sheet, that edge is an
    edge: what enters there is not the digit."""
    page = np.zeros((600, 800), np.uint8)
    cv2.fillPoly(page, [np.array([[0, 0], [640, 0], [560, 599], [0, 599]], np.int32)], 1)
    ink = np.zeros((600, 800), np.float32)
    ink[200:400, 150:350] = 0.9 * seven(200, 14)
    cv2.line(ink, (600, 300), (430, 480), 0.9, 10)  # from the sheet's edge onto it (the table's part is gone)
    pen = np.zeros(ink.shape, np.uint8)
    cv2.line(pen, (590, 311), (440, 470), 1, 6)
    assert normalize.without_clutter(ink, 0.1)[pen == 1].min() > 0.8  # measured on the frame, it stays
    cleaned = normalize.without_clutter(ink, 0.1, page.astype(bool))
    assert cleaned[pen == 1].max() <= 0
    assert np.array_equal(cleaned[200:400, 150:350], ink[200:400, 150:350])


def test_a_digit_cropped_to_the_edge_is_not_clutter(monkeypatch):
    """A tight crop: the digit itself reaches the frame's edges (a speck of dust
    clear of them too), so nothing that touches them is taken for clutter."""
    ink = seven(size=160, thickness=14)
    ys, xs = np.nonzero(ink > 0.5)
    ink = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    ink[60:63, 4:7] = 1.0
    data = encode(1 - ink)
    tensor = to_tensor(data)
    monkeypatch.setattr(normalize, "without_clutter", lambda ink, level, page=None: ink)
    assert np.array_equal(tensor, to_tensor(data))


def test_one_thick_line_is_one_line_whatever_angles_hough_gives_it():
    # Hough's peaks for one line a few px thick lie a degree or so apart, all
    # through the same place; lines through other places are other lines
    height, width = 300, 400
    centre = np.array([(width - 1) / 2, (height - 1) / 2])

    def through(y_at_centre: float, degrees: float) -> tuple[float, float]:
        theta = np.deg2rad(degrees)  # the normal's angle: 90 is horizontal
        return float(centre[0] * np.cos(theta) + y_at_centre * np.sin(theta)), float(theta)

    lines = np.array([through(150, 90), through(150.5, 90.5), through(149, 89), through(170, 92), through(190, 88)],
                     dtype=np.float32)
    kept = _distinct(lines, height, width)
    assert np.allclose(kept, lines[[0, 3, 4]])  # the strongest of each place, in Hough's order


def test_a_parallel_page_is_searched_at_its_one_angle():
    # converging lines are looked for only at the angles of distinct lines:
    # thick parallel lines alone do not start that search
    marked = np.zeros((300, 400), np.uint8)
    for y in range(20, 300, 30):
        marked[y : y + 4, :] = 1
    candidates = _line_candidates(marked)
    assert len(candidates) >= 9
    assert len({theta for _, theta in candidates}) == 1
