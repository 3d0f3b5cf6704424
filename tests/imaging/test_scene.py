"""What lies around the digit in a photo: the sheet on its table, a cut-out page, the light and its shadows.

Pure: scenes are drawn with OpenCV in memory; no model, no servers.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from streamapp.imaging import normalize
from streamapp.imaging.normalize import find_sheet, shaded_paper
from streamapp.imaging.tensor import to_tensor
from tests.imaging.drawing import encode, glyph, similar

#: a sheet lying tilted on the table, about 45% of a 768x1024 frame
_SHEET = np.array([[250, 120], [930, 60], [990, 560], [300, 700]], np.int32)


def _on_table(table: float = 0.3, paper: float = 0.88, blur: float = 0.0, corners=_SHEET) -> np.ndarray:
    """Gray float32: the sheet on a table; ``blur`` (px) softens its edge as a shadow's border is soft."""
    frame = np.full((768, 1024), table, np.float32)
    cv2.fillPoly(frame, [corners], paper, cv2.LINE_AA)
    return cv2.GaussianBlur(frame, (0, 0), blur) if blur else frame


def _digit_on(frame: np.ndarray, size: int = 90, at: tuple[int, int] = (300, 500), pen: float = 0.1) -> np.ndarray:
    """A "4" drawn on ``frame`` (gray, or BGR: the same pen in every channel)."""
    alpha = np.zeros(frame.shape[:2], np.float32)
    alpha[at[0] : at[0] + size, at[1] : at[1] + size] = glyph(size=size)
    if frame.ndim == 3:
        alpha = alpha[..., None]
    return frame * (1 - alpha) + pen * alpha


def _inside(shape: tuple[int, ...], corners: np.ndarray = _SHEET) -> np.ndarray:
    """The polygon ``corners`` as a 0/1 uint8 mask of ``shape``."""
    return cv2.fillPoly(np.zeros(shape[:2], np.uint8), [corners], 1)


# -- the sheet on a table ---------------------------------------------------------------


def test_a_sheet_on_a_darker_table_is_found_with_what_is_written_on_it():
    image = (_digit_on(_on_table()) * 255).astype(np.uint8)
    sheet = find_sheet(image)
    assert sheet is not None and sheet.shape == image.shape
    inside = _inside(image.shape)
    # the sheet, its digit included, and nothing of the table (a margin clear of the edge aside)
    assert sheet[inside == 1].mean() > 0.9 and sheet[inside == 0].mean() < 0.01
    assert sheet[300:390, 500:590].all()


def test_a_sheet_written_on_near_its_edge_is_found():
    """The "4" a few pixels from the sheet's left edge: its strokes reach into
    the rim, yet it is writing on the sheet (_RIM_SHARE, _RIM_DEPTH)."""
    image = (_digit_on(_on_table(), at=(300, 268)) * 255).astype(np.uint8)
    sheet = find_sheet(image)
    assert sheet is not None
    assert sheet[_inside(image.shape) == 1].mean() > 0.9


def test_a_soft_edge_is_a_shadow_not_a_sheet():
    # the same outline and contrast, its edge spread as a shadow's penumbra is
    # (2.6% of the frame's short side): the light's log changes by under
    # _SHEET_EDGE per pixel of the 256 px copy
    assert find_sheet((_digit_on(_on_table(blur=20.0)) * 255).astype(np.uint8)) is None
    assert find_sheet((_digit_on(_on_table(blur=1.0)) * 255).astype(np.uint8)) is not None


def test_a_faint_edge_is_no_sheet_and_a_clear_one_is():
    # log(0.88 / 0.8) over a pixel or two is under _SHEET_EDGE; log(0.88 / 0.6) is well over
    assert find_sheet((_digit_on(_on_table(table=0.8)) * 255).astype(np.uint8)) is None
    assert find_sheet((_digit_on(_on_table(table=0.6)) * 255).astype(np.uint8)) is not None


def test_an_edge_fading_in_places_is_closed_by_its_straight_run():
    """Right of the middle the table is nearly as light as the paper: there
    the sheet's edge is under _SHEET_EDGE and the table's region runs into
    the sheet's. The edge is straight and sharp, though (_SHEET_LINE,
    _SHEET_SHARP): its run closes the sheet."""
    frame = _on_table()
    frame[:, 620:][frame[:, 620:] < 0.5] = 0.78
    image = (_digit_on(frame) * 255).astype(np.uint8)
    sheet = find_sheet(image)
    assert sheet is not None
    inside = _inside(image.shape)
    assert sheet[inside == 1].mean() > 0.9 and sheet[inside == 0].mean() < 0.01


def test_a_large_sheet_needs_writing_inside_it():
    """_SHEET_WRITING_SPAN: a blank sheet on a table is no sheet (nor is a wall
    above a board, closed off by the board's frame); written on, it is."""
    assert find_sheet((_on_table() * 255).astype(np.uint8)) is None
    assert find_sheet((_digit_on(_on_table()) * 255).astype(np.uint8)) is not None


def test_paper_all_over_and_a_scrap_on_the_table_are_no_sheet():
    assert find_sheet((_digit_on(np.full((768, 1024), 0.88, np.float32)) * 255).astype(np.uint8)) is None
    scrap = np.array([[400, 300], [560, 300], [560, 420], [400, 420]], np.int32)  # 2.4% of the frame
    assert find_sheet((_on_table(corners=scrap) * 255).astype(np.uint8)) is None


def test_a_sheet_cut_by_the_frame_is_a_sheet():
    # a quadrilateral running off two sides: the frame adds corners of its own
    corners = np.array([[300, -200], [1300, 100], [1100, 1000], [200, 600]], np.int32)
    assert find_sheet((_digit_on(_on_table(corners=corners)) * 255).astype(np.uint8)) is not None


def test_a_thick_light_digit_on_a_dark_board_is_no_sheet():
    """Chalk: a light blob, brighter than the board, its edges sharp, its loop
    filled: convex and a third of the frame. Its rounded outline has more
    than a quadrilateral's 4 corners (_SHEET_CORNERS), so the whole frame is read."""
    board = np.full((768, 1024), 0.2, np.float32)
    cv2.ellipse(board, (512, 384), (180, 300), 10, 0, 360, 0.85, 90, cv2.LINE_AA)
    image = (board * 255).astype(np.uint8)
    assert find_sheet(image) is None
    tensor = to_tensor(encode(image))
    assert tensor[13:15, 13:15].max() < 0.1 and tensor.max() > 0.9  # a 0: ink around, none in its middle


def test_a_small_picture_is_not_searched():
    assert find_sheet(np.full((120, 160), 128, np.uint8)) is None


def test_a_small_digit_on_a_sheet_on_a_dark_table_is_dark_ink(reference):
    """The table fills 60% of the frame and the sheet looks like light ink on
    it; read on the sheet, the digit is dark ink on paper."""
    image = _digit_on(_on_table(table=0.12), size=110, at=(280, 520))
    data = encode(np.dstack([image] * 3), ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 90))
    assert similar(to_tensor(data), reference, 0.9)


#: a sticky note, 4% of the frame, lying whole on the desk
_NOTE = np.array([[600, 300], [780, 285], [795, 460], [615, 475]], np.int32)


def _note_on_desk(desk, note, written: bool = True) -> np.ndarray:
    """BGR float32: a sticky note on a plain desk, a "4" on it, and a pen on
    the desk, longer and darker than the digit, that a read of the whole
    frame takes for ink."""
    frame = np.full((768, 1024, 3), desk, np.float32)
    cv2.fillPoly(frame, [_NOTE], note, cv2.LINE_AA)
    cv2.line(frame, (100, 650), (420, 560), (0.12, 0.12, 0.12), 14, cv2.LINE_AA)
    return _digit_on(frame, size=110, at=(330, 640), pen=0.15) if written else frame


@pytest.mark.parametrize(
    ("desk", "note"),
    [((0.86, 0.86, 0.86), (0.55, 0.45, 0.90)),  # a pink note, darker than a light grey desk
     ((0.25, 0.40, 0.55), (0.55, 0.92, 0.95)),  # a yellow note, lighter than a wooden one
     ((0.70, 0.70, 0.70), (0.85, 0.55, 0.98))],  # a pink note as bright as a grey desk: told by its colour
)
def test_a_sticky_note_on_a_desk_is_a_sheet_lighter_or_darker_than_the_desk(desk, note, reference):
    image = _note_on_desk(desk, note)
    sheet = find_sheet((image * 255).astype(np.uint8))
    assert sheet is not None
    inside = _inside(sheet.shape, _NOTE)
    # the note less a rim (the edge's width on the 256 px copy), the digit on it, none of the desk
    assert sheet[inside == 1].mean() > 0.75 and sheet[330:440, 640:750].all() and sheet[inside == 0].mean() < 0.01
    assert similar(to_tensor(encode(image, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 90))), reference, 0.9)


def test_a_small_sheet_needs_writing_on_it_and_all_of_it_in_the_frame():
    # blank, the note is a scrap on the desk
    assert find_sheet((_note_on_desk((0.86, 0.86, 0.86), (0.55, 0.45, 0.90), written=False) * 255).astype(np.uint8)) is None
    # a sheet filling the frame, past a corner of it a wooden table with its
    # grain: that corner is a small quadrilateral with marks in it, cut by the frame
    frame = np.full((768, 1024), 0.88, np.float32)
    corner = np.array([[1023, 560], [1023, 767], [760, 767]], np.int32)
    cv2.fillPoly(frame, [corner], 0.35, cv2.LINE_AA)
    for x in range(880, 1024, 24):
        cv2.line(frame, (x, 740), (x + 60, 700), 0.2, 2)
    frame[_inside(frame.shape, corner) == 0] = 0.88
    assert find_sheet((_digit_on(frame) * 255).astype(np.uint8)) is None


def test_a_small_digit_makes_a_note_written_on(reference):
    """_NOTE_WRITING_SPAN: a "4" spanning a quarter of the note's side (a
    note far off in a photo, written on small) makes it a sheet, and the
    digit is read rather than the pen on the desk."""
    desk, note = (0.86, 0.86, 0.86), (0.55, 0.45, 0.90)
    image = _digit_on(_note_on_desk(desk, note, written=False), size=56, at=(360, 680), pen=0.15)
    assert find_sheet((image * 255).astype(np.uint8)) is not None
    assert similar(to_tensor(encode(image, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 90))), reference, 0.9)


def test_a_pastel_note_with_a_soft_edge_on_a_grainy_desk_is_told_by_its_hue(reference):
    """_NOTE_HUE: a light blue note on a grey desk as bright as it, its edge
    soft and the desk grainy, so neither brightness nor the colour channels
    split the frame at its edge; its hue does."""
    frame = np.full((768, 1024, 3), 0.8, np.float32)
    cv2.fillPoly(frame, [_NOTE], (0.88, 0.78, 0.70), cv2.LINE_AA)
    frame = cv2.GaussianBlur(frame, (0, 0), 1.5)
    frame += np.random.default_rng(3).normal(0, 0.03, frame.shape[:2]).astype(np.float32)[..., None]
    cv2.line(frame, (100, 650), (420, 560), (0.12, 0.12, 0.12), 14, cv2.LINE_AA)
    image = _digit_on(frame, size=110, at=(330, 640), pen=0.15).clip(0, 1)
    sheet = find_sheet((image * 255).astype(np.uint8))
    assert sheet is not None and sheet[330:440, 640:750].all()
    assert sheet[_inside(sheet.shape, _NOTE) == 0].mean() < 0.01
    assert similar(to_tensor(encode(image, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 90))), reference, 0.9)


def test_a_loop_in_coloured_ink_encloses_no_note():
    """A red loop on blue squared paper: what it encloses is a region of the
    paper's own colour with grid lines in it, not a note of another colour."""
    frame = np.full((768, 1024, 3), (0.92, 0.90, 0.86), np.float32)
    for at in range(0, 1024, 64):
        cv2.line(frame, (at, 0), (at, 767), (0.85, 0.70, 0.55), 4)
        cv2.line(frame, (0, at), (1023, at), (0.85, 0.70, 0.55), 4)
    loop = cv2.boxPoints(((500, 380), (160, 128), 15)).astype(np.int32)  # a squarish "0"
    cv2.polylines(frame, [loop], True, (0.15, 0.15, 0.65), 16, cv2.LINE_AA)
    assert find_sheet((frame * 255).astype(np.uint8)) is None


def test_a_dark_phone_with_light_marks_on_its_screen_is_no_note():
    """A phone on a light desk: a quadrilateral, whole in the frame, its
    screen's dark gaps between light icons lifted by the closing as writing
    is; but dark, not paper (_NOTE_PAPER)."""
    desk = np.full((768, 1024), 0.8, np.float32)
    cv2.rectangle(desk, (600, 250), (760, 560), 0.08, -1)
    for y in range(270, 540, 22):
        for x in range(615, 745, 22):
            desk[y : y + 14, x : x + 14] = 0.6
    assert find_sheet((np.dstack([desk] * 3) * 255).astype(np.uint8)) is None


def test_a_thick_grainy_stroke_is_no_small_sheet():
    """A chalk 1 on a board: a light, convex quadrilateral, whole in the
    frame, with the chalk's grain on it; but five times as long as wide, and
    its marks specks, not writing across it."""
    board = np.full((768, 1024), 0.2, np.float32)
    stroke = cv2.boxPoints(((512, 384), (70, 360), 12)).astype(np.int32)
    cv2.fillPoly(board, [stroke], 0.85, cv2.LINE_AA)
    grain = np.random.default_rng(7).random(board.shape) < 0.004
    board[cv2.dilate(grain.astype(np.uint8), np.ones((6, 6), np.uint8)).astype(bool) & (board > 0.5)] = 0.3
    assert find_sheet((board * 255).astype(np.uint8)) is None


def _grainy(shape: tuple[int, int], seed: int, grain: float) -> np.ndarray:
    """Wood's grain: streaks along a slant, with a few px of noise across them."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    streaks = np.sin((xs * 0.6 + ys) / 9.0 + rng.normal(0, 0.8, shape).astype(np.float32))
    return cv2.GaussianBlur(grain * streaks + rng.normal(0, grain, shape).astype(np.float32), (0, 0), 1.2)


def test_paper_as_bright_as_its_wooden_table_is_found_by_its_smoothness(reference):
    """Grey paper on light wood: no edge to split the frame by brightness,
    but the wood is grainy and the paper smooth (_SMOOTH, _TEXTURED), with a
    pencil digit inside it. (In photos, read on the whole frame, the wood's
    grain counted as the paper's noise, and faint pencil was refused as empty.)"""
    table = 0.8 + _grainy((768, 1024), seed=3, grain=0.06)
    paper = 0.8 + np.random.default_rng(4).normal(0, 0.006, table.shape).astype(np.float32)
    inside = _inside(table.shape)
    image = np.clip(_digit_on(np.where(inside == 1, paper, table), size=140, at=(260, 500), pen=0.45), 0, 1)
    sheet = find_sheet((image * 255).astype(np.uint8))
    assert sheet is not None
    # the sheet less its rim (the texture's window), the digit on it, none of the table
    assert sheet[inside == 1].mean() > 0.8 and sheet[260:400, 500:640].all() and sheet[inside == 0].mean() < 0.02
    assert similar(to_tensor(encode(np.dstack([image] * 3), ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 90))), reference, 0.9)


def test_a_smooth_wall_beside_a_grainy_chalk_board_is_no_sheet():
    """The wall above a board is smooth where the board is grainy with chalk
    dust, and sheet-shaped; but nothing dark is written inside it."""
    frame = 0.3 + _grainy((768, 1024), seed=5, grain=0.05)  # the board
    wall = 0.85 + np.random.default_rng(6).normal(0, 0.005, frame.shape).astype(np.float32)
    frame[:230] = wall[:230]
    frame[230:262] = 0.45 + _grainy((32, 1024), seed=7, grain=0.08)  # its frame, wooden
    # out of focus at the wall: no edge sharp enough to split the frame by brightness
    frame[:300] = cv2.GaussianBlur(frame[:300], (0, 0), 8.0) + wall[:300] - 0.85
    cv2.ellipse(frame, (512, 500), (90, 160), 0, 0, 360, 0.9, 18, cv2.LINE_AA)  # a chalk 0
    assert find_sheet((frame.clip(0, 1) * 255).astype(np.uint8)) is None


def test_only_strokes_clear_of_a_smooth_sheets_rim_are_writing_on_it():
    """A board's wooden frame or the table's grain, dark along the rim of a
    smooth region, is not written on it (_WRITING_RIM); a stroke inside is."""
    sheet = np.zeros((100, 100), np.uint8)
    sheet[10:90, 10:90] = 1
    along_the_rim, inside = np.zeros((100, 100), bool), np.zeros((100, 100), bool)
    along_the_rim[11:14, 20:80] = True
    inside[40:43, 20:80] = True
    assert normalize._span_inside(along_the_rim, sheet) == 0
    assert normalize._span_inside(inside, sheet) == 60


def test_a_stroke_written_near_the_sheets_edge_is_writing_on_it():
    """_RIM_SHARE, _RIM_DEPTH: a digit written near the edge touches the rim
    with a few of its pixels and reaches deep into the sheet; the frame's
    edge along the rim, a little wider than it, reaches no deeper."""
    sheet = np.zeros((100, 100), np.uint8)
    sheet[10:90, 10:90] = 1
    near_the_edge, along_the_rim = np.zeros((100, 100), bool), np.zeros((100, 100), bool)
    near_the_edge[12:41, 50:53] = True  # 6 of its 87 pixels in the rim
    along_the_rim[13:18, 20:80] = True  # a fifth in the rim, 8 px deep at most
    assert normalize._span_inside(near_the_edge, sheet) == 29
    assert normalize._span_inside(along_the_rim, sheet) == 0


def test_with_no_ink_on_the_sheet_the_whole_frame_is_read(monkeypatch, reference):
    # a "sheet" found where nothing is written (the digit lies past it): the frame is read as before
    image = _digit_on(np.full((768, 1024), 0.88, np.float32), size=110, at=(300, 700))
    data = encode(image)
    blank = np.zeros(image.shape, np.float32)
    blank[:, :500] = 1.0
    monkeypatch.setattr(normalize, "find_sheet", lambda image: blank)
    tensor = to_tensor(data)
    monkeypatch.setattr(normalize, "find_sheet", lambda image: None)
    assert np.array_equal(tensor, to_tensor(data)) and similar(tensor, reference, 0.9)


# -- a page cut out of its photo (transparency) ------------------------------------------


@pytest.mark.parametrize("black_under", [False, True])
def test_a_cut_out_page_under_half_the_frame_is_paper_not_ink(reference, black_under):
    page = _digit_on(np.full((768, 1024), 0.88, np.float32), size=110, at=(280, 520))
    alpha = np.zeros(page.shape, np.float32)
    cv2.fillPoly(alpha, [_SHEET], 1.0, cv2.LINE_AA)
    assert alpha.mean() < 0.5
    if black_under:
        page = page * (alpha > 0)
    assert similar(to_tensor(encode(np.dstack([page] * 3 + [alpha]))), reference, 0.9)


def test_what_is_a_page_and_what_is_strokes():
    frame = np.zeros((300, 400), bool)
    broad = frame.copy()
    broad[50:250, 60:300] = True  # 40% of the frame, a broad quadrilateral: a page
    assert normalize._is_page(broad)
    strokes = frame.copy()
    for x in range(20, 400, 40):
        strokes[:, x : x + 10] = True  # 25% of the frame in bars 10 px wide: strokes
    assert not normalize._is_page(strokes)
    assert normalize._is_page(frame | True)  # over half the frame, whatever its shape
    assert not normalize._is_page(broad & (np.arange(400) < 100))  # a broad patch of 10%: too little


# -- light and shadows ----------------------------------------------------------------------


def _shadowed(depth: float, soft: float = 25.0, lamp: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Gray paper under a lamp, a hand-like shadow of ``depth`` across its
    middle, and a pencil-grey digit half in it; and the light alone."""
    xs = np.mgrid[0:600, 0:800][1].astype(np.float32)
    light = 1.0 - lamp * xs / 800
    shadow = np.zeros((600, 800), np.float32)
    cv2.ellipse(shadow, (560, 330), (260, 170), 20, 0, 360, 1.0, -1)
    light *= 1.0 - depth * cv2.GaussianBlur(shadow, (0, 0), soft)
    paper = np.full((600, 800), 0.9, np.float32)
    return _digit_on(paper, size=160, at=(220, 300), pen=0.45) * light, light


def test_shaded_paper_is_the_light_not_the_strokes():
    gray, light = _shadowed(0.55)
    shade = shaded_paper(gray)
    assert shade is not None
    paper = 0.9 * light
    digit = np.zeros(gray.shape, bool)
    digit[220:380, 300:460] = glyph(size=160) > 0.5
    # follows the shadow and the lamp on the paper, within a few percent ...
    away = ~cv2.dilate(digit.astype(np.uint8), np.ones((31, 31), np.uint8)).astype(bool)
    assert np.median(np.abs(shade[away] / paper[away] - 1)) < 0.03
    # ... and goes over the strokes, not into them
    assert np.median(shade[digit] / paper[digit]) > 0.9


def test_even_light_is_left_to_the_paper_estimate():
    # a lamp's slope of 15% across the page (0.16 in log): even enough
    gray, _ = _shadowed(0.0, lamp=0.15)
    assert shaded_paper(gray) is None
    # 15% and a shadow a quarter dark: 0.45 in log
    gray, _ = _shadowed(0.25, lamp=0.15)
    assert shaded_paper(gray) is not None


def test_a_tight_crop_or_a_small_picture_has_no_shading_estimate():
    assert shaded_paper(np.full((200, 240), 0.9, np.float32)) is None
    # a tight crop: the strokes are as wide as anything there, no closing size leaves them out
    tight = 1 - 0.8 * cv2.resize(glyph(size=200, thickness=60), (600, 600))
    assert shaded_paper(tight.astype(np.float32)) is None


def test_the_closing_that_lifts_the_strokes_is_past_where_ink_stops_growing():
    sizes = normalize._SHADE_SIZES
    # ink grows up to the 3rd size (the strokes' width), then stays: the size after it
    grows = [10.0, 50.0, 100.0] + [102.0] * (len(sizes) - 3)
    assert normalize._stroke_closing(grows) == 3
    # a shadow keeps adding "ink" at every size: no size separates strokes from it
    assert normalize._stroke_closing([float(2**i) for i in range(len(sizes))]) is None
    assert normalize._stroke_closing([0.0] * len(sizes)) is None


def test_a_plateau_between_neighbouring_sizes_when_a_shadow_adds_at_every_doubling():
    # a hand's shadow photographed (its energies): the strokes are inside from
    # the 2nd size on (+6% to the 3rd), the fingers keep adding after: no
    # doubling stays under _SHADE_PLATEAU, the neighbouring sizes do
    hand = [56.0, 208.0, 220.0, 238.0, 314.0, 393.0, 515.0, 639.0]
    assert normalize._stroke_closing(hand) == 2
    # a plateau just over _SHADE_NEXT is none
    assert normalize._stroke_closing([56.0, 208.0, 231.0, 260.0, 314.0, 393.0, 515.0, 639.0]) is None
    # a wide marker's digit with no shadow (its energies): the plateau holds
    # 81% of what the widest closing lifts, over _SHADE_SHADOWED; a closing
    # that narrow would hollow the digit's broad crossing
    marker = [21.0, 70.0, 570.0, 2235.0, 3610.0, 3739.0, 4588.0, 4592.0]
    assert normalize._stroke_closing(marker) is None
    assert normalize._stroke_closing([*marker[:-1], 3739.0 / normalize._SHADE_SHADOWED + 1.0]) == 5


def _lit_strip(pen: float, depth: float = 0.6) -> np.ndarray:
    """Gray: a phone's shadow over all but a lit strip at the frame's right
    (12%), its border soft (10 px), and a pencil digit in the shadow."""
    shadow = np.zeros((768, 1024), np.float32)
    shadow[:, :901] = 1.0
    light = 1.0 - depth * cv2.GaussianBlur(shadow, (0, 0), 10)
    ink = np.zeros(shadow.shape, np.float32)
    ink[300:420, 300:420] = glyph(size=120)
    return (0.88 * (1 - ink * (1 - pen)) * light).astype(np.float32)


def test_a_lit_strip_beside_a_shadow_is_light_not_ink():
    gray = _lit_strip(pen=0.7)
    # the 64 px copy alone takes the lit strip for light ink ...
    assert normalize._lighter_departures(gray, None)
    # ... near sharp edges the pencil's dark departures are the larger
    brighter, darker = normalize._sharp_departures(gray)
    assert darker - brighter > normalize._POLARITY_MARGIN * darker
    assert not normalize.light_ink(gray)
    tensor = to_tensor(encode(gray, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 90)))
    assert similar(tensor, to_tensor(encode(_lit_strip(pen=0.7, depth=0.0))), 0.9)
    # under _SCENE_SIDE the sharp edges are not asked
    small = cv2.resize(gray, (399, 299), interpolation=cv2.INTER_AREA)
    assert normalize._lighter_departures(small, None) == normalize.light_ink(small)


def test_chalk_under_a_lamps_glare_stays_light_ink():
    ys, xs = np.mgrid[0:768, 0:1024].astype(np.float32)
    ink = np.zeros((768, 1024), np.float32)
    ink[300:420, 300:420] = glyph(size=120)
    for glare in (0.0, 0.6):
        light = 1 + glare * np.exp(-((xs - 800) ** 2 + (ys - 200) ** 2) / (2 * 120**2))
        board = np.clip((0.18 + 0.55 * ink) * light, 0, 1).astype(np.float32)
        assert normalize.light_ink(board)


def _chalk_four(size: int, thickness: int) -> np.ndarray:
    """A "4" drawn with a stick of chalk ``thickness`` px wide, white on black."""
    ink = np.zeros((size, size), np.uint8)
    points = (np.array([[0.62, 0.92], [0.62, 0.08], [0.12, 0.64], [0.88, 0.64]]) * size).astype(np.int32)
    cv2.polylines(ink, [points], False, 255, thickness, cv2.LINE_AA)
    return ink.astype(np.float32) / 255


def test_a_chalk_digit_filling_the_frame_is_not_hollowed():
    """Strokes so thick (70 of 420 px) that the opening's disk (_OPENING on
    the 64 px copy) fits where they meet: the board found there is the chalk,
    and the digit's middle was lost (ink 0.1 against 0.56); _LIGHT_BOARD keeps it."""
    chalk = _chalk_four(420, 70)
    board = (0.15 + 0.6 * chalk).astype(np.float32)
    ink = normalize.ink_image(board, light=True)
    strokes = chalk > 0.9
    inner = cv2.erode(strokes.view(np.uint8), np.ones((31, 31), np.uint8)).astype(bool)  # where they are thickest
    assert ink[inner].min() > 0.6 * np.percentile(ink[strokes], 90)
    tensor = to_tensor(encode(board))
    assert (tensor > 0.5).sum() > 0.9 * (cv2.resize(chalk, (20, 20), interpolation=cv2.INTER_AREA) > 0.5).sum()


def test_a_lamps_soft_light_on_the_board_stays_board_beside_thick_chalk():
    """_LIGHT_BOARD caps the board's rise above what the wider opening finds,
    not above the board's median: a lamp's light (0.4 over a 0.15 board,
    wider than that disk) keeps the opening's own small residue, and is no chalk."""
    ys, xs = np.mgrid[0:600, 0:1000].astype(np.float32)
    chalk = np.zeros((600, 1000), np.float32)
    chalk[150:450, 600:900] = _chalk_four(300, 40)
    light = 0.4 * np.exp(-((xs - 250) ** 2 + (ys - 300) ** 2) / (2 * 150**2))
    ink = normalize.ink_image((0.15 + light + 0.6 * chalk).astype(np.float32), light=True)
    assert ink[250:350, 200:300].max() < 0.15
    assert ink[chalk > 0.9].min() > 0.45


def test_a_pencil_digit_half_in_a_deep_shadow_is_read_not_refused(reference):
    gray, _ = _shadowed(0.6, soft=30.0)
    digit = _digit_on(np.full((600, 800), 0.9, np.float32), size=160, at=(220, 300), pen=0.45)
    plain = to_tensor(encode(digit))
    tensor = to_tensor(encode(np.clip(gray, 0, 1), ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 90)))
    assert similar(tensor, plain, 0.9) and similar(tensor, reference, 0.85)


# -- a pen lying in view ---------------------------------------------------------------------


def _pen_and_digit(pen_length: int, pen_width: int = 12, digit: int = 100) -> np.ndarray:
    """Signed ink (as ink_image gives it): a digit-sized "7" and a straight pen beside it."""
    ink = np.zeros((600, 800), np.float32)
    ink[150 : 150 + digit, 150 : 150 + digit] = seven_ink(digit)
    cv2.line(ink, (400, 450), (400 + pen_length, 450 - pen_length // 3), 0.9, pen_width)
    return ink


def seven_ink(size: int) -> np.ndarray:
    from tests.imaging.drawing import seven

    return seven(size, max(3, size // 10)) * 0.8


def test_a_pen_far_longer_than_the_digit_goes_and_the_digit_stays():
    ink = _pen_and_digit(330)  # ~350 px long: over 4 times the digit's ~80 px span
    cleaned = normalize.without_bars(ink, 0.2)
    pen = (ink > 0.5) & (np.arange(800) >= 390)
    assert cleaned[pen].max() < 0.05
    assert np.array_equal(cleaned[150:250, 150:250], ink[150:250, 150:250])


def test_a_fat_marker_beside_a_fine_pens_digit_goes():
    """The digit holds ~4% of the marker's ink, but spans a quarter of its
    length: a digit, not a speck (_BAR_REST)."""
    from tests.imaging.drawing import seven

    ink = np.zeros((600, 800), np.float32)
    ink[150:250, 150:250] = seven(100, 3) * 0.8
    cv2.line(ink, (400, 450), (730, 340), 0.9, 40)
    cleaned = normalize.without_bars(ink, 0.2)
    pen = (ink > 0.5) & (np.arange(800) >= 380)
    assert cleaned[pen].max() < 0.05
    assert np.array_equal(cleaned[150:250, 150:250], ink[150:250, 150:250])


def test_specks_far_from_the_digit_and_ink_entering_at_the_edge_do_not_widen_its_span():
    ink = _pen_and_digit(330)
    pen = (ink > 0.5) & (np.arange(800) >= 390)
    # grain: specks 6 px wide (9 px of the half-size labelling, over the 8 a speck may have)
    # across the page, and the pen's end entering at the frame's right edge
    spread = ink.copy()
    for y, x in ((40, 40), (560, 60), (40, 700), (300, 560), (560, 560)):
        spread[y : y + 6, x : x + 6] = 0.9
    spread[100:120, 780:800] = 0.9
    cleaned = normalize.without_bars(spread, 0.2)
    assert cleaned[pen].max() < 0.05
    assert np.array_equal(cleaned[150:250, 150:250], ink[150:250, 150:250])


def test_a_bar_not_twice_the_digits_span_is_kept():
    # ~1.3 times the digit's span (_BAR_LONGER is 2): a long stroke, not a pen
    ink = _pen_and_digit(100)
    assert np.array_equal(normalize.without_bars(ink, 0.2), ink)


def test_a_thick_short_shape_or_a_lone_bar_is_not_a_pen():
    # as thick as a finger's shadow: under _BAR_ASPECT times as long as thick
    assert np.array_equal(normalize.without_bars(_pen_and_digit(330, pen_width=70), 0.2), _pen_and_digit(330, pen_width=70))
    # a long straight stroke with nothing else there is the digit (a 1)
    lone = np.zeros((600, 800), np.float32)
    cv2.line(lone, (400, 100), (420, 500), 0.9, 12)
    assert np.array_equal(normalize.without_bars(lone, 0.2), lone)


def test_a_speck_beside_a_long_stroke_does_not_make_it_a_pen():
    # what is left besides the bar must hold _BAR_REST of its ink: a speck does not
    ink = np.zeros((600, 800), np.float32)
    cv2.line(ink, (300, 100), (330, 500), 0.9, 12)
    ink[300:306, 500:506] = 0.9
    assert np.array_equal(normalize.without_bars(ink, 0.2), ink)


def _cup_and_digit(cup_radius: int = 110, ring: int = 0) -> np.ndarray:
    """Ink: a fine pen's "7" and, apart from it, a cup seen from above (a
    solid disc; ``ring`` > 0: only its rim, that many px wide)."""
    ink = np.zeros((600, 800), np.float32)
    ink[150:250, 150:250] = seven_ink(100)
    cv2.circle(ink, (560, 380), cup_radius, 0.9, -1 if not ring else ring, cv2.LINE_AA)
    return ink


def test_a_cup_beside_the_digit_goes_and_the_digit_stays():
    ink = _cup_and_digit()
    cleaned = normalize.without_blobs(ink, 0.2)
    cup = (ink > 0.5) & (np.arange(800) >= 400)
    assert cleaned[cup].max() < 0.05
    assert np.array_equal(cleaned[150:250, 150:250], ink[150:250, 150:250])


def test_a_cups_rim_a_thick_digit_or_a_lone_blob_stays():
    # a ring is strokes: not solid (_BLOB_SOLID)
    assert np.array_equal(normalize.without_blobs(_cup_and_digit(ring=12), 0.2), _cup_and_digit(ring=12))
    # a thick marker's digit: thick, but its thickness a small share of its length
    marker = np.zeros((600, 800), np.float32)
    marker[100:500, 200:600] = glyph("4", size=400, thickness=60)
    assert np.array_equal(normalize.without_blobs(marker, 0.2), marker)
    # a solid shape with nothing else there, or with grain only, is what there is to read
    lone = np.zeros((600, 800), np.float32)
    cv2.circle(lone, (400, 300), 100, 0.9, -1)
    assert np.array_equal(normalize.without_blobs(lone, 0.2), lone)
    lone[40:44, 40:44] = 0.9
    assert np.array_equal(normalize.without_blobs(lone, 0.2), lone)


def test_a_small_digit_beside_a_cup_on_a_sheet_is_read(reference):
    """End to end: a small dark cup (or a phone's camera, a bottle cap) on
    the sheet, darker and bigger than the digit, beside a "4" a tenth of the
    frame tall. (A bigger cup's middle is taken for paper, its edge a ring.)"""
    frame = _digit_on(_on_table(), size=90, at=(300, 420))
    cv2.circle(frame, (760, 330), 45, 0.12, -1, cv2.LINE_AA)
    tensor = to_tensor(encode(frame))
    assert similar(tensor, reference, 0.8)


def test_scenes_are_looked_for_from_400_px_on():
    """_SCENE_SIDE: under 400 px (longest side) a picture is a crop or a scan;
    the same sheet and the same shadow are found at 400 and not at 399."""
    table = (_digit_on(_on_table()) * 255).astype(np.uint8)
    shadowed, _ = _shadowed(0.55)
    assert find_sheet(cv2.resize(table, (400, 300), interpolation=cv2.INTER_AREA)) is not None
    assert find_sheet(cv2.resize(table, (399, 299), interpolation=cv2.INTER_AREA)) is None
    assert shaded_paper(cv2.resize(shadowed, (400, 300), interpolation=cv2.INTER_AREA)) is not None
    assert shaded_paper(cv2.resize(shadowed, (399, 299), interpolation=cv2.INTER_AREA)) is None
