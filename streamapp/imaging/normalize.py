"""The MNIST normalisation, applied to photographs (pure image math: OpenCV + numpy).

Reads: a decoded picture (any depth; gray, BGR or BGRA).
Writes: nothing; returns a (28, 28) float32 array in [0, 1], white ink on
black, or raises :class:`streamapp.errors.EmptyImage`.

What MNIST itself was made with: find the ink whatever its polarity, flatten
uneven paper, crop the digit, fit it in 20x20 keeping its aspect ratio, and
centre its centre of mass in the 28x28 field.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple, cast

import cv2
import numpy as np

from streamapp.errors import EmptyImage
from streamapp.imaging import quantiles

#: longest side the normalisation works at; larger pictures are shrunk first
WORK_SIDE = 1024
#: stroke width in the 28x28 output: MNIST's median (by ``stroke_width``) and
#: the thinnest the model is left to cope with unaided
_MNIST_STROKE = 2.2
_MIN_STROKE = 1.5
#: where MNIST puts the centre of mass (x, y), measured on the training digits
_MNIST_CENTRE = (14.0, 14.0)


def _unit_scale(image: np.ndarray) -> np.ndarray:
    """Any decoded depth -> float32 in [0, 1]."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float32) / float(np.iinfo(image.dtype).max)
    return np.clip(np.nan_to_num(image.astype(np.float32)), 0.0, 1.0)


def _shrunk(image: np.ndarray, side: float, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """``image`` with its longest side at most ``side`` px (itself if it is that small already)."""
    height, width = image.shape[:2]
    if max(height, width) <= side:
        return image
    scale = side / max(height, width)
    return cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=interpolation)


#: how a colour picture becomes one channel: luminance, or per pixel its
#: channel that departs most from the paper's colour, darker or lighter (see
#: :func:`ink_gray`)
MIXES = ("luminance", "darkest", "lightest")


def _one_channel(colour: np.ndarray, mix: str, opaque: np.ndarray | None = None) -> np.ndarray:
    """BGR at its decoded depth -> one channel, float32, the paper near 1.0
    (dark ink) or 0.0 (light ink), its grain kept on both sides.

    "darkest": each channel as a share of the paper's own value in it, then
    the least; the paper (its median colour) becomes white whatever its tint,
    and an ink is as dark as it is in the channel it darkens most. "lightest":
    the same towards white, for light ink on a dark board.
    """
    if mix == "luminance":
        return _unit_scale(cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY))
    small = _shrunk(colour, 64)
    pixels = small.reshape(-1, 3)
    if opaque is not None:  # only what is seen: transparent pixels' colour means nothing
        seen = cv2.resize(opaque.astype(np.uint8), (small.shape[1], small.shape[0]), interpolation=cv2.INTER_NEAREST)
        pixels = pixels[seen.ravel().astype(bool)] if seen.any() else pixels
    paper = _unit_scale(np.median(pixels, axis=0).astype(colour.dtype)).astype(np.float64)
    # each channel's own noise, smoothed a little first: the least (or most) of
    # three noisy channels has a longer tail than any one of them
    channels = [cv2.GaussianBlur(_unit_scale(channel), (0, 0), 0.7) for channel in cv2.split(colour)]
    if mix == "darkest":
        shares = [channel * np.float32(1.0 / max(level, 1e-3)) for channel, level in zip(channels, paper, strict=True)]
        # not clipped at the paper's 1.0: the paper's noise, both ways, is what
        # tells ink from grain (digit_mask)
        return cv2.min(cv2.min(shares[0], shares[1]), shares[2])
    shares = [(channel - np.float32(level)) * np.float32(1.0 / max(1.0 - level, 1e-3))
              for channel, level in zip(channels, paper, strict=True)]
    return cv2.max(cv2.max(shares[0], shares[1]), shares[2])


def to_gray(image: np.ndarray, mix: str = "luminance") -> np.ndarray:
    """Decoded image (any depth; gray, BGR or BGRA) -> float32 gray in [0, 1]
    (a little past it with the "darkest" and "lightest" mixes: see
    :func:`_one_channel`).

    ``mix`` says how colour becomes gray (:data:`MIXES`).

    Transparency: a transparent pixel shows whatever is behind it and its own
    colour means nothing (it is often black), so the picture is composited on
    the backdrop that makes transparent areas read as *paper*:

    * a page (a photo with cut-out margins, a sheet cut out of its table:
      :func:`_is_page`): the opaque pixels are the paper, so each transparent
      pixel takes the shade of the opaque paper around it (a flat fill would
      draw edges where the light is uneven);
    * strokes drawn on a transparent sheet: the opaque pixels are the ink, so
      the backdrop contrasts with them (white behind dark strokes, black
      behind light ones).
    """
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return _unit_scale(image)
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        image = _unit_scale(image)
    # to one channel at the decoded depth first: a big photo is then converted
    # to float32 once, not three or four times
    colour = np.ascontiguousarray(image[:, :, :3])
    if image.shape[2] != 4:
        return _one_channel(colour, mix)
    alpha = _unit_scale(image[:, :, 3])
    if alpha.min() >= 1.0:
        return _one_channel(colour, mix)
    opaque = alpha > 0.5
    if not opaque.any():
        raise EmptyImage("no ink: the image is fully transparent")
    page = _is_page(opaque)
    # strokes on a transparent sheet: no paper to take a colour from, and the
    # backdrop below gives them full contrast already
    gray = _one_channel(colour, mix if page else "luminance", opaque)
    shade = quantiles.median(gray[opaque])
    if page:
        backdrop = _surrounding_shade(gray, alpha, shade)
    else:
        backdrop = 1.0 if shade < 0.5 else 0.0
    return gray * alpha + backdrop * (1.0 - alpha)


#: what is opaque is a page, not strokes, when it covers half the picture, or
#: is this thick (2 x area / outline, as a share of the shorter side) and
#: covers this much: a sheet cut out of a photo of a table is a broad
#: quadrilateral, a stroke (even a tight crop's fat 1) is far thinner
_PAGE_SHARE = 0.5
_PAGE_THICKNESS = 0.2
_PAGE_LEAST = 0.15


def _is_page(opaque: np.ndarray) -> bool:
    """Whether the opaque pixels are a page (paper, with the ink on it) rather
    than strokes drawn on a transparent sheet."""
    share = float(opaque.mean())
    if share >= _PAGE_SHARE:
        return True
    if share < _PAGE_LEAST:
        return False
    small = _shrunk(opaque.astype(np.uint8), 128, cv2.INTER_NEAREST)
    return stroke_width(small) >= _PAGE_THICKNESS * min(small.shape)


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
    if flat.size <= k:
        return float(flat.max())
    if values.ndim == 2 and values.shape[0] > k:
        # k rows reach the k-th largest row maximum, so the answer is at least
        # that: only what reaches it is partitioned, not the whole picture
        rows = values.max(axis=1)
        bound = np.partition(rows, rows.size - k)[rows.size - k]
        top = values[rows >= bound]
        flat = top[top >= bound]
    return float(np.partition(flat, flat.size - k)[flat.size - k])


def _components(binary: np.ndarray, connectivity: int = 8) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """``cv2.connectedComponentsWithStats``, with 16-bit labels when they
    cannot overflow (fewer set pixels than that): the same labels, four times
    faster on a sparse 1024 px mask than with 32-bit ones."""
    return cv2.connectedComponentsWithStats(binary, connectivity=connectivity, ltype=_label_type(binary))


def _label_type(binary: np.ndarray) -> int:
    """16-bit labels when there are fewer set pixels than they can count, else 32-bit."""
    return cv2.CV_16U if cv2.countNonZero(binary) < 65535 else cv2.CV_32S


def _paper_copy(gray: np.ndarray) -> tuple[np.ndarray, bool]:
    """``gray`` shrunk to 64 px and lightly blurred (whether it was shrunk)."""
    small = _shrunk(gray, 64)
    return cv2.GaussianBlur(small, (0, 0), 1.0), small is not gray


#: in a scene the polarity is read on a copy this size (longest side, px), ...
_POLARITY_SIDE = 256
#: ... against a median this wide there (a third of the frame: wider than a
#: marker's stroke, so the median is paper, lit or shaded) ...
_POLARITY_WINDOW = 81
#: ... near sharp edges only: the log of the brightness changes by this much
#: a pixel of that copy at an ink stroke's edge; a shadow's soft border (and
#: the lit gap between a hand's fingers) changes it by far less
_POLARITY_EDGE = 0.15
#: one side's strongest departure must exceed the other's by this share
_POLARITY_MARGIN = 0.1


def _sharp_departures(gray: np.ndarray) -> tuple[float, float] | None:
    """A scene's strongest brighter and darker departures (log) from the
    paper's median, taken where the edges are sharp: ink has sharp edges,
    light and shadow do not. None when there are too few sharp edges."""
    small = _shrunk(gray, _POLARITY_SIDE)
    log = _log(small)
    median = cv2.medianBlur((np.clip(small, 0, 1) * 255).round().astype(np.uint8), _POLARITY_WINDOW)
    residual = log - np.log(np.maximum(median, 1).astype(np.float32) / 255)
    sharp = cv2.dilate((_log_gradient(small) > _POLARITY_EDGE).astype(np.uint8), _SQUARE5).astype(bool)
    if np.count_nonzero(sharp) < 20:
        return None
    near = residual[sharp]
    return _kth_largest(near), _kth_largest(-near)


def light_ink(gray: np.ndarray, small: np.ndarray | None = None) -> bool:
    """Whether the ink is lighter than the paper (chalk on a board, a negative).

    A median filter (on the 64 px copy) gives a background that favours
    neither dark nor light; the ink is the side whose strongest departures
    from it are clearly larger (global percentiles are fooled by uneven light).
    Light ink is the rarer case, and a lamp's lit corner or the lit side of a
    hand's shadow departs as far as chalk does, but softly: in a scene (a photo
    of :data:`_SCENE_SIDE` or more) a light verdict must hold near sharp
    edges too (:func:`_sharp_departures`).
    """
    light = _lighter_departures(gray, small)
    if light and max(gray.shape) >= _SCENE_SIDE:
        departures = _sharp_departures(gray)
        if departures is not None:
            brighter, darker = departures
            if darker - brighter > _POLARITY_MARGIN * darker:
                return False
    return light


def _lighter_departures(gray: np.ndarray, small: np.ndarray | None) -> bool:
    """:func:`light_ink`'s verdict on the 64 px copy alone."""
    height, width = gray.shape
    if small is None:
        small, _ = _paper_copy(gray)
    median = cv2.medianBlur((np.clip(small, 0, 1) * 255).round().astype(np.uint8), 15).astype(np.float32) / 255
    if median.shape != gray.shape:
        median = cv2.resize(median, (width, height), interpolation=cv2.INTER_LINEAR)
    residual = gray - median
    brighter, darker = _kth_largest(residual), _kth_largest(-residual)
    if abs(brighter - darker) > 0.25 * max(brighter, darker):
        return brighter > darker
    # a tie: thick strokes filled the median's window, so the residual
    # shows them both ways; then the majority (the median pixel) is paper
    # and the ink is on the side of the longer tail
    low, middle, high = quantiles.percentiles(gray.ravel(), (0.5, 50, 99.5))
    return bool(high - middle > middle - low)


def ink_gray(image: np.ndarray) -> tuple[np.ndarray, bool | None]:
    """Decoded image -> the gray that shows its ink best, and the ink's polarity
    when it had to be found (None: for :func:`ink_image` to find).

    Coloured ink is pale in luminance (a red ballpoint on white paper: 0.57 of
    full contrast, a faint one far less), yet dark in some channel. So a colour
    picture is reduced per pixel to its darkest channel when the ink is darker
    than the paper, or to its lightest when it is lighter (chalk): every ink
    colour, and any paper tint, keeps at least its luminance contrast.
    """
    if image.ndim == 2 or image.shape[2] == 1:
        return to_gray(image), None
    light = light_ink(to_gray(image))
    return to_gray(image, "lightest" if light else "darkest"), light


#: pictures smaller than this (longest side, px) are crops or scans, not
#: scenes: no table, hand's shadow or lamp to look for, and the looking
#: would cost the bench's samples a third more transform time
_SCENE_SIDE = 400
#: the side of the copy the paper's shading is estimated on
_SHADE_SIDE = 256
#: the closings tried there (px): from a fine pen's width to a marker's
_SHADE_SIZES = (3, 5, 7, 9, 13, 17, 25, 33)
#: what counts as ink in that search: at least this much darker (log) than
#: the closing; the paper's grain and a shadow's smooth ramp are not
_SHADE_DARKER = 0.1
#: the strokes are all inside a closing when doubling its size adds at most
#: this share of ink more (what a larger one adds is shadow)
_SHADE_PLATEAU = 1.15
#: failing that, when the next size adds at most this share more
_SHADE_NEXT = 1.1
#: ... and the strokes hold at most this share of what the widest closing lifts
_SHADE_SHADOWED = 0.6
#: the light is uneven enough to divide out when it spans this much (log,
#: 1st to 99th percentile: 0.25 is a third darker); evener light is left to
#: :func:`ink_image`'s own background, which keeps the strokes' profile
_SHADE_SPREAD = 0.25


def _closed(log: np.ndarray, size: int) -> np.ndarray:
    return cv2.morphologyEx(log, cv2.MORPH_CLOSE, np.ones((size, size), np.uint8))


def _closings(log: np.ndarray, widest: np.ndarray) -> tuple[list[float], list[np.ndarray]]:
    """Each :data:`_SHADE_SIZES` closing of ``log`` (the widest given, made
    already), and how much ink (darker by over :data:`_SHADE_DARKER`) it lifts."""
    energies, closings = [], []
    for size in _SHADE_SIZES:
        closed = widest if size == _SHADE_SIZES[-1] else _closed(log, size)
        depth = closed - log
        energies.append(float(depth[depth > _SHADE_DARKER].sum()))
        closings.append(closed)
    return energies, closings


def _stroke_closing(energies: list[float]) -> int | None:
    """Index of the closing that lifts every stroke but no more: the size after
    the first one past which doubling lifts little more ink (strokes are
    inside; shadows, wider, are not yet). None if there is none."""
    for index, size in enumerate(_SHADE_SIZES):
        double = next((other for other, wider in enumerate(_SHADE_SIZES) if wider >= 2 * size), None)
        if double is None:
            break
        if energies[index] > 0 and energies[double] <= _SHADE_PLATEAU * energies[index]:
            return min(index + 1, len(_SHADE_SIZES) - 1)
    # a hand's shadow (its fingers, its soft border) adds ink at every
    # doubling; the strokes' plateau then shows between neighbouring sizes,
    # well below what the widest closing lifts with the shadow (without one,
    # a wide digit's crossing would be hollowed by the narrower closing)
    for index in range(len(_SHADE_SIZES) - 2):
        if 0 < energies[index] and energies[index + 1] <= min(
            _SHADE_NEXT * energies[index], _SHADE_SHADOWED * energies[-1]
        ):
            return index + 1
    return None


def shaded_paper(gray: np.ndarray) -> np.ndarray | None:
    """The paper's brightness under the light that falls on it (shadows,
    their soft borders, a lamp), for dark ink: a grey closing of log(gray) on
    a 256 px copy, just wider than the strokes (:func:`_stroke_closing`). None
    for a picture under :data:`_SCENE_SIDE`, when no closing size separates the strokes
    from the rest (a tight crop's strokes are as wide as anything there), or
    when the light is even (:data:`_SHADE_SPREAD`).

    Light multiplies the paper, so dividing by this takes a shadow out
    whatever its depth, and leaves ink its contrast inside the shadow.
    """
    height, width = gray.shape
    if max(height, width) < _SCENE_SIDE:
        return None
    log = np.log(np.clip(_shrunk(gray, _SHADE_SIDE), 1.0 / 255, None))
    # first the widest closing: it lifts the digit whole, a broad blob of ink
    # (a marker's crossing) as well, and leaves only the light
    widest = _closed(log, _SHADE_SIZES[-1])
    darkest, brightest = quantiles.percentiles(widest, (1, 99))
    if brightest - darkest < _SHADE_SPREAD:
        return None
    energies, closings = _closings(log, widest)
    chosen = _stroke_closing(energies)
    if chosen is None:
        return None
    background = cv2.GaussianBlur(closings[chosen], (0, 0), 1.0)
    return np.exp(cv2.resize(background, (width, height), interpolation=cv2.INTER_LINEAR))


def ink_image(gray: np.ndarray, light: bool | None = None) -> np.ndarray:
    """Gray in [0, 1] -> ink strength over a zero background, either polarity.

    Signed: the background keeps its noise around zero, so that noise can be
    measured (clipping at zero first would hide half of it).

    Everything about the paper is estimated on a copy shrunk to 64 px: the
    polarity, unless ``light`` gives it (:func:`light_ink`), and the paper's
    brightness (uneven light, tint, vignetting): a grey opening wider than
    any stroke. Unlike a median it never takes a thick stroke of a tightly
    cropped digit for paper.
    """
    height, width = gray.shape
    small, shrunk = _paper_copy(gray)

    def full(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR) if shrunk else image

    if light is None:
        light = light_ink(gray, small)
    if not light:
        shade = shaded_paper(gray)
        if shade is not None:  # light multiplies the paper: divided out, shadows and all
            return 1.0 - gray / shade
    ink, small = (gray, small) if light else (1.0 - gray, 1.0 - small)
    # the light keeps its slope past the edge (odd reflection: 2 * edge - mirror);
    # with a flat or mirrored border the opening clips a vignette's rise at the
    # edge, and the clipped part would look like a stroke along the border
    padded = np.pad(small, _PAD, mode="reflect", reflect_type="odd") if shrunk and min(small.shape) > _PAD else small
    background = _opened(padded, _OPENING)
    if light:
        # a chalk digit filling the frame holds the opening's disk where its
        # thick strokes meet: the "board" found there is the strokes themselves,
        # and the digit would be hollowed. The board rises at most a share of
        # the chalk's contrast above what a wider disk finds: light on the
        # board is wide and soft, and stays.
        board = quantiles.median(small)
        # the chalk's level at full size: a small digit's fades on the 64 px copy
        rise = _LIGHT_BOARD * (_kth_largest(ink) - board)
        # the wider disk on a half-size copy: a reference, a quarter of the cost
        half = cv2.resize(padded, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        wider = cv2.resize(_opened(half, _OPENING), (padded.shape[1], padded.shape[0]), interpolation=cv2.INTER_LINEAR)
        background = np.minimum(background, wider + rise)
    background = cv2.GaussianBlur(background, (0, 0), 3.0)
    if padded is not small:
        background = background[_PAD:-_PAD, _PAD:-_PAD]
    return ink - full(np.ascontiguousarray(background))


#: margin for the background estimate: the opening's radius plus the blur's reach
_PAD = 16
#: the opening that finds the paper under the strokes on the 64 px copy (px);
#: the same on a 32 px copy is the wider one, which thick chalk strokes
#: cannot hold (:func:`ink_image`)
_OPENING = 15
#: light ink's board rises at most this share of the chalk's contrast (its
#: level above the board's median) above what the wider opening finds
_LIGHT_BOARD = 0.3


def _opened(image: np.ndarray, size: int) -> np.ndarray:
    """Grey opening (min then max filter) by a disk ``size`` px wide: drops strokes thinner than it."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    return cv2.morphologyEx(image, cv2.MORPH_OPEN, kernel, borderType=cv2.BORDER_REPLICATE)


#: a ruled or grid line runs across at least this share of the image; a digit's
#: own longest stroke (a 7's bar, tightly cropped) spans ~55% of a 28 px image
_LINE_SPAN = 0.85
#: how far from horizontal or vertical a page's lines may lie (a tilted photo)
_LINE_TILT = np.deg2rad(15.0)
_LINE_THETA = np.deg2rad(0.5)  # Hough's step; the angle is then refined to 0.1 degree
#: converging lines (keystone) are looked for at the angles Hough found
#: distinct lines at this close to the sharpest, and a step either side of each
_LINE_CONVERGE = np.deg2rad(4.0)
_LINE_STEP = np.deg2rad(0.25)
_LINE_NEAR = np.array([-_LINE_STEP, 0.0, _LINE_STEP])
_SQUARE3 = np.ones((3, 3), np.uint8)
_SQUARE5 = np.ones((5, 5), np.uint8)
#: the shortest line considered (px): a corner of a tilted photo cuts lines
#: short, and what it leaves of them would widen the digit's box
_LINE_SHORTEST = 20


def _robust_level(ink: np.ndarray) -> tuple[float, float]:
    """The background's median and noise (MAD) from every other pixel: the
    statistics of a big image settle long before all of it is read."""
    flat = (ink[::2, ::2] if ink.size > 40_000 else ink).ravel()
    median = quantiles.median(flat)
    return median, 1.4826 * quantiles.median(np.abs(flat - median))


def _line_candidates(marked: np.ndarray, page: np.ndarray | None = None) -> list[tuple[float, float]]:
    """(rho, theta) of straight runs of ink within ``_LINE_TILT`` of horizontal or
    vertical that may run edge to edge (of the ``page``, when given): candidates,
    checked by :func:`_line_run`.

    A page's lines are parallel. Hough finds their angle from the longest ones;
    a projection of the ink across that angle then finds every line, those a
    corner of a tilted photo cuts short as well."""
    height, width = marked.shape
    points = cv2.findNonZero(marked)  # np.nonzero's order, in a quarter of its time
    if points is None:
        return []
    points = points.reshape(-1, 2)
    xs, ys = points[:, 0].astype(np.float32), points[:, 1].astype(np.float32)
    found = []
    offset = width + height  # rho may be negative
    # theta is the angle of the line's normal: ~90 deg for a horizontal line, ~0 or ~180 for a vertical one
    for low, high, extent in ((np.pi / 2 - _LINE_TILT, np.pi / 2 + _LINE_TILT, width),
                              (0.0, _LINE_TILT, height), (np.pi - _LINE_TILT, np.pi - 1e-6, height)):
        lines = cv2.HoughLines(marked, 1, _LINE_THETA, max(20, int(0.5 * extent)), min_theta=low, max_theta=high)
        if lines is None:
            continue
        sharpest = _sharpest_angle(xs, ys, float(lines[0, 0, 1]))
        # seen at a slant the page's lines converge (keystone): each is
        # looked for at the angle Hough found each distinct line at, and a little past
        found_at = _distinct(lines[:, 0], height, width)[:, 1]
        apart = np.abs(found_at - sharpest)
        # parallel lines (all within Hough's step of the sharpest) need no more
        found_at = np.unique(found_at[(apart > 1.2 * _LINE_THETA) & (apart <= _LINE_CONVERGE)])
        # Hough's angles are 0.5 degree apart: each line's own lies within a quarter of one
        angles = np.unique(np.rint((found_at[:, None] + _LINE_NEAR[None, :]) / _LINE_STEP)) * _LINE_STEP
        before = len(found)
        for theta in [sharpest, *angles[np.abs(angles - sharpest) > _LINE_STEP / 2]]:
            if theta != sharpest and len(found) == before:
                break  # no line at the sharpest angle: no page's lines to converge
            sin, cos = np.sin(theta), np.cos(theta)
            votes = np.bincount(np.rint(xs * cos + ys * sin).astype(np.intp) + offset, minlength=2 * offset + 1)
            rhos = np.flatnonzero(votes >= _LINE_SHORTEST // 2)
            # a line a pixel or two wide may share its votes between two bins
            pair = votes[rhos] + np.maximum(votes[np.maximum(rhos - 1, 0)], votes[np.minimum(rhos + 1, len(votes) - 1)])
            if page is not None:  # what is on the page is counted for the few with votes enough
                rhos, pair = rhos[pair >= _LINE_SHORTEST], pair[pair >= _LINE_SHORTEST]
            chords = _chords(rhos - offset, theta, height, width) if page is None else _page_chords(rhos - offset, theta, page)
            share = pair / np.maximum(chords, 1)
            keep = (chords >= _LINE_SHORTEST) & (share >= 0.6)
            rhos, share = rhos[keep], share[keep]
            # one candidate per run of neighbouring bins (one line's width): its strongest bin
            for run in np.split(np.arange(len(rhos)), np.flatnonzero(np.diff(rhos) > 1) + 1) if len(rhos) else []:
                best = run[np.argmax(votes[rhos[run]])]
                found.append((float(share[best]), float(rhos[best] - offset), float(theta)))
    # the best-covered first: a line found at a slightly wrong angle too is then the same line again
    return [(rho, theta) for _, rho, theta in sorted(found, key=lambda candidate: -candidate[0])]


def _distinct(lines: np.ndarray, height: int, width: int) -> np.ndarray:
    """Hough's (rho, theta) lines, strongest first, without those that pass
    within :data:`_LINE_SAME` px of a stronger one at the image's centre: one
    thick line gives peaks a degree or so apart, all through the same
    place; converging lines pass through different places."""
    centre = (width - 1) / 2 * np.cos(lines[:, 1]) + (height - 1) / 2 * np.sin(lines[:, 1]) - lines[:, 0]
    kept: list[int] = []
    for index, at in enumerate(centre):
        if not kept or np.abs(centre[kept] - at).min() > _LINE_SAME:
            kept.append(index)
    return lines[kept]


#: lines this close (px) at the image's centre are one line (:func:`_distinct`)
_LINE_SAME = 3.0


def _sharpest_angle(xs: np.ndarray, ys: np.ndarray, theta: float) -> float:
    """``theta`` refined to 0.1 degree: the angle at which the ink's projection is
    most peaked (parallel lines all fall in few bins)."""
    best, best_score = theta, -1.0
    for candidate in theta + np.deg2rad(np.arange(-0.5, 0.51, 0.1)):
        rho = np.rint(xs * np.cos(candidate) + ys * np.sin(candidate)).astype(np.intp)
        votes = np.bincount(rho - rho.min()).astype(np.float64)
        score = float((votes * votes).sum())
        if score > best_score:
            best, best_score = float(candidate), score
    return best


def _chords(rhos: np.ndarray, theta: float, height: int, width: int) -> np.ndarray:
    """How many pixels of the line (rho, theta) lie inside the image, per rho:
    the length :func:`_line_run` samples (one point per column or per row)."""
    sin, cos = np.sin(theta), np.cos(theta)
    if abs(sin) >= abs(cos):  # y = (rho - x cos) / sin, for x in [0, width)
        along, slope, scale, span = width, -cos / sin, 1 / sin, height
    else:
        along, slope, scale, span = height, -sin / cos, 1 / cos, width
    # the other coordinate at the first and last point, as rho varies
    first = rhos * scale
    last = first + slope * (along - 1)
    low, high = np.minimum(first, last), np.maximum(first, last)
    # share of the run that is inside [-0.5, span - 0.5), as a straight line
    run = np.maximum(high - low, 1e-6)
    inside = np.clip(np.minimum(high, span - 0.5) - np.maximum(low, -0.5), 0, None)
    share = np.where(high - low < 1e-6, ((low > -0.5) & (low < span - 0.5)).astype(np.float64), inside / run)
    return share * along


def _line_points(rhos: np.ndarray, theta: float, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The lines (rho, theta) sampled once per column (mostly horizontal) or
    per row: x and y, one row per rho."""
    sin, cos = np.sin(theta), np.cos(theta)
    if abs(sin) >= abs(cos):
        xs = np.broadcast_to(np.arange(width, dtype=np.float32), (len(rhos), width))
        return xs, (rhos[:, None] - xs * cos) / sin
    ys = np.broadcast_to(np.arange(height, dtype=np.float32), (len(rhos), height))
    return (rhos[:, None] - ys * sin) / cos, ys


def _pixels(xs: np.ndarray, ys: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The points (xs, ys) rounded to pixels and held inside a ``height`` x
    ``width`` image: rows and columns to index it with."""
    return np.clip(np.rint(ys).astype(np.intp), 0, height - 1), np.clip(np.rint(xs).astype(np.intp), 0, width - 1)


def _at(mask: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """``mask`` at the points (xs, ys), rounded to pixels and held inside it."""
    return mask[_pixels(xs, ys, *mask.shape)]


def _page_chords(rhos: np.ndarray, theta: float, page: np.ndarray) -> np.ndarray:
    """Like :func:`_chords`, but counting only the line's pixels on the page."""
    height, width = page.shape
    xs, ys = (np.rint(values).astype(np.intp) for values in _line_points(rhos.astype(np.float32), theta, height, width))
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    return (_at(page, xs, ys) & inside).sum(axis=1)


class _Line(NamedTuple):
    """A candidate line (rho, theta), sampled once per column or row
    (:func:`_line_points`): its points; which of them fall on a pixel of the
    image once rounded (``on``) and those pixels (held inside the image);
    which of them :func:`_line_run` measures (``inside``: on the image and
    on the page, if any), and the share of those with ink within a pixel."""

    theta: float
    xs: np.ndarray
    ys: np.ndarray
    on: np.ndarray
    rows: np.ndarray
    columns: np.ndarray
    inside: np.ndarray
    covered: float


#: how far :func:`_line_run` looks across a line (px either side) ...
_REACH = 8
_ACROSS = np.arange(-_REACH, _REACH + 1, dtype=np.float32)
#: ... and within a pixel of it
_NEAR = _ACROSS[_REACH - 1 : _REACH + 2]


def _ink_across(padded: np.ndarray, xs: np.ndarray, ys: np.ndarray, theta: float, offsets: np.ndarray) -> np.ndarray:
    """Whether there is ink at each point (xs, ys) moved by each of the
    ``offsets`` along the normal of angle ``theta``: ``padded`` is the marked
    ink with :data:`_REACH` px of zeros around it, past the edge is no ink."""
    px = np.rint(xs[..., None] + offsets * np.cos(theta)).astype(np.intp) + _REACH
    py = np.rint(ys[..., None] + offsets * np.sin(theta)).astype(np.intp) + _REACH
    # points off the image are clipped to its margin; the callers leave them out
    height, width = padded.shape
    return padded[np.clip(py, 0, height - 1), np.clip(px, 0, width - 1)].astype(bool)


def _sampled(
    candidates: list[tuple[float, float]], padded: np.ndarray, page: np.ndarray | None = None
) -> list[_Line]:
    """The candidates (rho, theta) as :class:`_Line`, in their order: all
    those found at one angle are sampled and measured together, where a
    ruled page has a hundred or more candidates at a dozen angles."""
    height, width = padded.shape[0] - 2 * _REACH, padded.shape[1] - 2 * _REACH
    at_angle: dict[float, list[int]] = {}
    for index, (_, theta) in enumerate(candidates):
        at_angle.setdefault(theta, []).append(index)
    lines: list[_Line | None] = [None] * len(candidates)
    for theta, indices in at_angle.items():
        xs, ys = _line_points(np.array([candidates[index][0] for index in indices]), theta, height, width)
        on = (ys > -0.5) & (ys < height - 0.5) & (xs > -0.5) & (xs < width - 0.5)  # on a pixel once rounded
        rows, columns = _pixels(xs, ys, height, width)
        # a sheet's lines stop at its edge, inside the frame
        inside = on & page[rows, columns] if page is not None else on
        counts = inside.sum(axis=1)
        hits = (_ink_across(padded, xs, ys, theta, _NEAR).any(axis=2) & inside).sum(axis=1)
        for row, index in enumerate(indices):
            covered = hits[row] / counts[row] if counts[row] else 0.0
            lines[index] = _Line(theta, xs[row], ys[row], on[row], rows[row], columns[row], inside[row], covered)
    return cast(list[_Line], lines)


def _line_run(padded: np.ndarray, line: _Line) -> tuple[float, np.ndarray, np.ndarray] | None:
    """How thick the ink along the ``line`` is (median over its length) and
    the line's pixel positions, where :func:`_sampled` measures it; None
    unless that is :data:`_LINE_SHORTEST` px or more (a tilted page's line
    may leave by the top or bottom: a corner of the image cuts it short, yet
    it still runs edge to edge) with ink along :data:`_LINE_SPAN` of it."""
    if line.inside.sum() < _LINE_SHORTEST or line.covered < _LINE_SPAN:
        return None
    xs, ys = line.xs[line.inside], line.ys[line.inside]
    across = _ink_across(padded, xs, ys, line.theta, _ACROSS)
    centre = across[:, _REACH - 1 : _REACH + 2].any(axis=1)
    return quantiles.median_of_counts(across.sum(axis=1)[centre]), xs, ys


def without_lines(ink: np.ndarray, page: np.ndarray | None = None) -> np.ndarray:
    """``ink`` with ruled and grid lines taken out: thin, straight runs of ink
    from edge to edge (85% of the way at least), within 15 degrees of
    horizontal or vertical, which no digit has. Where a stroke crosses or
    runs along a line, the line's pixels beside the stroke's ink stay. On a
    sheet lying on a table (``page``: where the sheet is), its edges are the
    edges: a tilted sheet's lines stop there, inside the frame.

    A lone long stroke of a tightly cropped digit (a 1) is thick or short of
    the image's extent; when it is neither, the caller keeps the lines
    (:func:`normalize_mnist` falls back when nothing else is left)."""
    height, width = ink.shape
    if min(height, width) < 40:  # a tight crop, MNIST-sized: nothing to rule
        return ink
    median, noise = _robust_level(ink)
    # what stands out of the paper: lines are fainter than ink, but a quantised
    # gradient's steps (a palette image) are fainter still
    marked = (ink > max(median + 4 * noise, 0.2 * _kth_largest(ink))).astype(np.uint8)
    thin = max(8.0, 0.025 * min(height, width))
    # one mask per direction: where a line crosses a stroke, what decides is the ink beside the line
    bands = {True: np.zeros_like(marked), False: np.zeros_like(marked)}
    reach = {True: 0, False: 0}
    if page is not None:  # its outline is found on a 256 px copy: what lies near it is not asked
        page = cv2.erode(page.astype(np.uint8), _SQUARE5).astype(bool)
    padded = np.pad(marked, _REACH)
    for line in _sampled(_line_candidates(marked, page), padded, page):
        horizontal = abs(np.sin(line.theta)) >= abs(np.cos(line.theta))
        if reach[horizontal]:
            on = line.on
            if on.any() and bands[horizontal][line.rows[on], line.columns[on]].mean() > 0.5:
                continue  # the same line again (at another angle; the vertical ranges meet at 0 and 180 degrees)
        run = _line_run(padded, line)
        if run is None:
            continue
        thickness, xs, ys = run
        points = np.rint(np.stack([xs, ys], axis=1)).astype(np.int32)
        # ink along 85% of it (_line_run), and thin: a band of shade or a thick stroke is not a line
        if 0 < thickness <= thin:
            width_px = round(thickness) + 2
            cv2.polylines(bands[horizontal], [points], False, 1, thickness=width_px)
            reach[horizontal] = max(reach[horizontal], width_px)
    if not (reach[True] or reach[False]):
        return ink
    # a line's soft edge (blur, JPEG, a tilt) reaches a pixel or two past the band
    nears = {horizontal: cv2.dilate(band, _SQUARE5).astype(bool) for horizontal, band in bands.items()}
    near = nears[True] | nears[False]
    # a stroke that crosses or runs along a line has ink beside the line:
    # those line pixels are the stroke's and stay (where lines cross, the other
    # line's ink counts too; what that keeps of the lines goes below)
    stroke = np.zeros(near.shape, bool)
    for horizontal, size in reach.items():
        if size:
            beside = (marked.astype(bool) & ~nears[horizontal]).astype(np.uint8)
            kernel = np.ones((2 * size + 5, 1) if horizontal else (1, 2 * size + 5), np.uint8)
            stroke |= nears[horizontal] & cv2.dilate(beside, kernel).astype(bool)
    cleaned = np.where(near & ~stroke, np.minimum(ink, 0.0), ink).astype(np.float32)
    # what is left of a line with no stroke through it (a bit kept beside a
    # speck) goes too: ink that lies wholly along the lines is not the digit's
    left = (((cleaned > 0) & marked.astype(bool)) | stroke).astype(np.uint8)
    count, labels = cv2.connectedComponents(left, connectivity=8, ltype=_label_type(left))
    if count > 1:
        off_line = np.bincount(labels[~near], minlength=count)
        along = (off_line[labels] == 0) & (labels > 0)
        cleaned[along] = np.minimum(cleaned[along], 0.0)
    return cleaned


#: what decides "no ink at all" (EmptyImage): the strongest ink (the k-th
#: largest, past a few hot pixels) stands out of the paper by less than this
#: share of full contrast (8 of 255 grey levels: a digit at 3% of black-on-white
#: contrast is hard to see, one at 4% is read) ...
FAINTEST_INK = 0.03
#: ... or by less than this many times the paper's noise (its grain, JPEG's
#: ripples), below which ink and noise cannot be told apart
EMPTY_NOISE = 8.0


#: a picture with nothing standing out of its grain pixel by pixel is looked
#: at again with the grain averaged over this many px (sigma, working size)
_GRAIN_BLUR = 2.0

#: a digit photographed with room around it spans less than this share of the
#: frame's shorter side; ink that reaches the frame's edge is then not the digit
_ROOM = 0.6


def without_clutter(ink: np.ndarray, level: float, page: np.ndarray | None = None) -> np.ndarray:
    """``ink`` without what reaches the edge of the frame, when the digit does not.

    A photo holds more than the digit: the page's edge against the table, a
    board's frame, a pen, a hand's shadow, lines that end at the page's edge.
    Such things enter the frame; a digit photographed with room around it
    does not. So when some ink above ``level`` (what stands out of the noise)
    lies clear of the edges, and all of that spans less than ``_ROOM`` of the
    frame, the ink touching the edges is taken out, before the digit's
    threshold is chosen (a page's edge is darker than a faint digit). A
    tight crop, whose digit reaches an edge, keeps everything, and so does
    :func:`digit_mask` when nothing would be left.
    """
    height, width = ink.shape
    if min(height, width) < 40:
        return ink
    count, labels, stats, _ = _components((ink > level).astype(np.uint8))
    if count <= 2:
        return ink
    left, top = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP]
    right, bottom = left + stats[1:, cv2.CC_STAT_WIDTH], top + stats[1:, cv2.CC_STAT_HEIGHT]
    areas = stats[1:, cv2.CC_STAT_AREA]
    edge = ~_clear_of_edges(stats, height, width)
    beyond = None
    if page is not None:  # a sheet's edge inside the frame is an edge too: a pen enters the sheet there
        beyond = ~cv2.erode(page.view(np.uint8), _PAGE_RIM).astype(bool)
        edge |= np.bincount(labels[beyond].ravel(), minlength=count)[1:] > 0
    if not edge.any():
        return ink
    # strong ink that reaches the edge only through faint ink (a digit
    # across a faint grid line that runs on to the edge) has not entered
    # the frame: it stays, and counts as clear of the edges
    inner = ~edge & (areas >= max(8, 0.08 * areas[~edge].max(initial=0)))
    boxes = [(left[inner], top[inner], right[inner], bottom[inner])]
    if areas[inner].sum() >= 30:
        span = max(right[inner].max() - left[inner].min(), bottom[inner].max() - top[inner].min())
        if span >= _ROOM * min(height, width):
            return ink  # what the protection below adds could only widen it
    protected = _held_inside(ink, _labelled(labels, np.flatnonzero(edge) + 1), level, beyond)
    if protected is not None:
        boxes.append(protected[1])
    lows, tops, rights, bottoms = (np.concatenate(parts) for parts in zip(*boxes, strict=True))
    if areas[inner].sum() + (protected[0].sum() if protected is not None else 0) < 30:
        return ink
    span = max(rights.max() - lows.min(), bottoms.max() - tops.min())
    if span >= _ROOM * min(height, width):
        return ink
    # the edge's ink with its soft border
    out = _labelled(labels, np.flatnonzero(edge) + 1)
    if protected is not None:
        out &= ~cv2.dilate(protected[0].view(np.uint8), _SQUARE5).astype(bool)
    out = cv2.dilate(out.view(np.uint8), _SQUARE5).astype(bool)
    if protected is not None:
        out &= ~protected[0]
    return np.where(out, np.minimum(ink, 0.0), ink).astype(np.float32)


#: how far in from a sheet's outline (px) what touches it counts as entering
_PAGE_RIM = np.ones((9, 9), np.uint8)

#: strong ink, for :func:`_held_inside`: at least this share of the strongest;
#: what joins it to the frame's edge is a line when no wider than this (px),
#: or than this share of the strong ink's own strokes (a marker's digit on
#: ruled paper: lines of 7-9 px against strokes of 50; a shadow joining a
#: marker's 0 to the edge measured half as wide as its strokes)
_STRONG = 0.4
_THIN_JOINT = 4.0
_THIN_JOINT_SHARE = 0.25


def _held_inside(
    ink: np.ndarray, reaching: np.ndarray, level: float, beyond: np.ndarray | None = None
) -> tuple[np.ndarray, tuple] | None:
    """Within ``reaching`` (ink above ``level`` connected to the frame's edge,
    or to ``beyond``: past a sheet's edge): the strong ink (:data:`_STRONG`)
    that does not itself touch either, as a mask and its components' boxes
    (left, top, right, bottom arrays); None if there is none."""
    height, width = ink.shape
    strong = (reaching & (ink > max(level, _STRONG * _kth_largest(ink)))).view(np.uint8)
    count, labels, stats, _ = _components(strong)
    if count <= 1:
        return None
    left, top = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP]
    right, bottom = left + stats[1:, cv2.CC_STAT_WIDTH], top + stats[1:, cv2.CC_STAT_HEIGHT]
    # clear of the edge by more than a soft rim (a tight crop's digit is not)
    clear = _clear_of_edges(stats, height, width, margin=max(3, round(0.02 * min(height, width))))
    clear &= stats[1:, cv2.CC_STAT_AREA] >= 30
    if beyond is not None:
        clear &= np.bincount(labels[beyond].ravel(), minlength=count)[1:] == 0
    if not clear.any():
        return None
    # and what joins it to the edge is thin, as a ruled line is: a pen's
    # end or a shadow fading into the light is as wide as the rest of it
    joint = reaching & ~cv2.dilate(strong, _SQUARE5).astype(bool)
    held = _labelled(labels, np.flatnonzero(clear) + 1)
    joint_width = stroke_width(joint)
    # the strong ink's own width only when asked: measuring it costs a pass over the frame
    if joint_width > _THIN_JOINT and joint_width > _THIN_JOINT_SHARE * stroke_width(held):
        return None
    return held, (left[clear], top[clear], right[clear], bottom[clear])


#: a pen lying in view: a straight bar (its pixels fill this share of their
#: rotated box at least) at least this many times as long as it is thick ...
_BAR_FILL = 0.7
_BAR_ASPECT = 6.0
#: ... and this many times as long as the rest of the ink spans, which spans
#: at least this share of the bar's length (a digit, not a speck beside it;
#: a fine pen's digit beside a fat marker holds a few % of its ink)
_BAR_LONGER = 2.0
_BAR_REST = 0.1
#: the span of the rest is that of its pieces holding at least this share of
#: the largest one's ink
_BAR_PIECE = 0.25


#: an object lying in view (a cup, a phone): ink above the level as solid
#: as a disc, its thickness (twice the deepest point's distance from its
#: border) at least this share of its box's longer side, and at least this
#: many times the thickest stroke of the rest of the ink
_BLOB_SOLID = 0.45
_BLOB_THICKER = 3.0
#: px of the half grid a blob, and a stroke of the rest, hold at least (less is grain)
_BLOB_LEAST = 30


def without_blobs(ink: np.ndarray, level: float) -> np.ndarray:
    """``ink`` without a solid object lying in the frame (a cup of coffee, a
    phone): a blob far thicker than any stroke of the rest of the ink. A
    digit is strokes, however thick the marker: its thickness is a small
    share of its length."""
    if min(ink.shape) < 40:
        return ink
    # on every other pixel, as for the bars; the ink a stroke's threshold
    # keeps at least (:func:`_strokes`), so faint shading fills no ring
    half = ink[::2, ::2]
    above = np.ascontiguousarray(half > max(level, 0.25 * _kth_largest(half))).astype(np.uint8)
    count, labels, stats, _ = _components(above)
    if count <= 2:
        return ink
    areas = stats[1:, cv2.CC_STAT_AREA]
    widths, heights = stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]
    longer = np.maximum(widths, heights)
    # a disc inside a box is at most as thick as the box is narrow: only a box
    # this square can hold a blob
    candidates = np.flatnonzero((areas >= _BLOB_LEAST) & (np.minimum(widths, heights) >= _BLOB_SOLID * longer))
    if not len(candidates):
        return ink
    # the frame's edge is a border too
    depth = cv2.distanceTransform(np.pad(above, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    thickness = np.zeros(len(areas), np.float32)
    for index in candidates:
        thickness[index] = 2 * _deepest(depth, labels, stats, index + 1)
    solid = thickness >= _BLOB_SOLID * longer
    # the rest: strokes, not grain
    rest = ~solid & (areas >= max(_BLOB_LEAST, 0.08 * areas[~solid].max(initial=0)))
    if not solid.any() or not rest.any():
        return ink
    blobs = solid & (thickness >= _BLOB_THICKER * 2 * depth[_labelled(labels, np.flatnonzero(rest) + 1)].max())
    if not blobs.any():
        return ink
    return _taken_out(ink, _labelled(labels, np.flatnonzero(blobs) + 1))


def without_bars(ink: np.ndarray, level: float) -> np.ndarray:
    """``ink`` without a pen lying in the frame: ink above ``level`` forming a
    straight, filled bar far longer than the rest of the ink spans. A digit
    is about as long as it is tall, and no stroke of it is a bar twice as
    long as the whole digit; a pen on the page is several times longer."""
    if min(ink.shape) < 40:
        return ink
    # on every other pixel: a pen is long, and the labelling costs a quarter
    above = np.ascontiguousarray(ink[::2, ::2] > level).astype(np.uint8)
    height, width = above.shape
    count, labels, stats, _ = _components(above)
    if count <= 2:
        return ink
    sides = np.maximum(stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT])
    areas = stats[1:, cv2.CC_STAT_AREA]
    bars = []
    for index in np.flatnonzero((sides >= 0.1 * min(height, width)) & (areas >= 30)):
        left, top, across, down = stats[index + 1, :4]
        pixels = cv2.findNonZero((labels[top : top + down, left : left + across] == index + 1).astype(np.uint8))
        (_, _), (long, thick), _ = cv2.minAreaRect(pixels)
        long, thick = max(long, thick), max(min(long, thick), 1.0)
        if long >= _BAR_ASPECT * thick and areas[index] >= _BAR_FILL * long * thick:
            bars.append((index, long))
    if not bars:
        return ink
    # the rest of the ink: neither bar nor speck
    rest = np.ones(len(areas), bool)
    rest[[index for index, _ in bars]] = False
    rest &= areas >= max(8, 0.08 * areas[rest].max(initial=0))
    if not rest.any():
        return ink
    # the digit's span from its pieces, not from specks of grain nor from
    # what enters at the frame's edge (the pen's end past a sheet's edge)
    pieces = rest & (areas >= _BAR_PIECE * areas[rest].max())
    inside = _clear_of_edges(stats, height, width)
    if (pieces & inside).any():
        pieces &= inside
    left, top = stats[1:, cv2.CC_STAT_LEFT][pieces], stats[1:, cv2.CC_STAT_TOP][pieces]
    right = left + stats[1:, cv2.CC_STAT_WIDTH][pieces]
    bottom = top + stats[1:, cv2.CC_STAT_HEIGHT][pieces]
    span = max(right.max() - left.min(), bottom.max() - top.min())
    out = np.zeros(above.shape, bool)
    for index, long in bars:
        if _BAR_REST * long <= span <= long / _BAR_LONGER:
            out |= labels == index + 1
    if not out.any():
        return ink
    return _taken_out(ink, out)


def _taken_out(ink: np.ndarray, half: np.ndarray) -> np.ndarray:
    """``ink`` without what ``half`` (a bool mask on its every other pixel)
    covers, with its soft border, at full size: no higher than the background there."""
    out = cv2.resize(cv2.dilate(half.astype(np.uint8), _SQUARE3), (ink.shape[1], ink.shape[0]),
                     interpolation=cv2.INTER_NEAREST)
    return np.where(cv2.dilate(out, _SQUARE3).astype(bool), np.minimum(ink, 0.0), ink).astype(np.float32)


def _clear_of_edges(stats: np.ndarray, height: int, width: int, margin: int = 0) -> np.ndarray:
    """Per component of a labelling (its ``stats``, background row first):
    whether its box stays more than ``margin`` px clear of the frame's edges."""
    left, top = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP]
    right, bottom = left + stats[1:, cv2.CC_STAT_WIDTH], top + stats[1:, cv2.CC_STAT_HEIGHT]
    return (left > margin) & (top > margin) & (right < width - margin) & (bottom < height - margin)


def _deepest(depth: np.ndarray, labels: np.ndarray, stats: np.ndarray, label: int) -> float:
    """The largest of ``depth`` (a distance transform) over one component of a
    labelling, read within the component's box only."""
    left, top, across, down = stats[label, :4]
    box = labels[top : top + down, left : left + across] == label
    return float(depth[top : top + down, left : left + across][box].max())


def _labelled(labels: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Where ``labels`` (a labelling's image) holds one of ``wanted``: ``np.isin``
    by a lookup table, a tenth of its cost on an MNIST-sized image."""
    table = np.zeros(int(labels.max()) + 1, bool)
    table[wanted] = True
    return table[labels]


def digit_mask(ink: np.ndarray, page: np.ndarray | None = None) -> tuple[np.ndarray, float, float]:
    """Binary mask of the digit's strokes, plus the background floor and ink level.

    ``ink`` is :func:`ink_image`'s signed output; ``page``: where a sheet
    lying on a table is (:func:`without_clutter`). Raises EmptyImage when
    nothing stands out from the background noise.
    """
    median = quantiles.median(ink)
    # noise from the median absolute deviation: robust while ink is a minority
    noise = 1.4826 * quantiles.median(np.abs(ink - median))
    peak = _kth_largest(ink)
    if peak < max(FAINTEST_INK, median + EMPTY_NOISE * noise):
        raise EmptyImage("no ink: the image is blank")
    level = median + 5 * noise
    uncluttered = without_blobs(without_bars(without_clutter(ink, level, page), level), level)
    if uncluttered is not ink:
        try:
            return _strokes(uncluttered, median, noise)
        except EmptyImage:
            pass  # what reached the edges was all the ink there is
    return _strokes(ink, median, noise)


def _strokes(ink: np.ndarray, median: float, noise: float) -> tuple[np.ndarray, float, float]:
    peak = _kth_largest(ink)
    if peak < max(FAINTEST_INK, median + EMPTY_NOISE * noise):
        raise EmptyImage("no ink: the image is blank")
    otsu, _ = cv2.threshold((np.clip(ink / peak, 0, 1) * 255).astype(np.uint8), 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    threshold = max(otsu / 255.0 * peak, median + 5 * noise, 0.25 * peak)
    mask = (ink > threshold).astype(np.uint8)
    count, labels, stats, _ = _components(mask)
    if count <= 1:
        raise EmptyImage("no ink: the image is blank")
    areas = stats[1:, cv2.CC_STAT_AREA]
    # specks: anything much smaller than the digit's main stroke
    keep = np.flatnonzero(areas >= max(2, 0.08 * areas.max())) + 1
    mask = _labelled(labels, keep)
    level = quantiles.percentile(ink[mask], 75)
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


#: the side of the copy the sheet is looked for on
_SHEET_SIDE = 256
#: a sheet's edge against the table: the log of the brightness changes by at
#: least this much per pixel of that copy (paper 0.85 on grey 0.45: 0.6 over
#: a pixel or two); a shadow's border, spread over 1.5-10% of the frame,
#: changes it by under 0.1, and a white desk's edge is not found (nor needed:
#: it does not pass for ink)
_SHEET_EDGE = 0.12
#: a sheet's edge fades under that in places (grey paper on light wood, a
#: shadow across it): straight runs of this strength, this long (px of the
#: copy, as many votes), gaps of up to this many px bridged, are edges too
_SHEET_LINE_EDGE = 0.05
_SHEET_LINE = 40
_SHEET_LINE_GAP = 10
#: and sharp: the gradient there at least this share of the log's range over
#: 13 px (a step blurred over a pixel or two: ~0.3; a penumbra of 5 px: ~0.1)
_SHEET_SHARP = 0.2
_SHEET_NEARBY = np.ones((13, 13), np.uint8)
#: ruled lines and strokes, thinner than this on that copy, are no edges
_SHEET_THIN = np.ones((7, 7), np.uint8)
#: near the frame's edge the table may be thinner than that: there the
#: picture's own edges count (a line or stroke that ends there encloses nothing)
_SHEET_BAND = 6
#: a sheet's outline is a quadrilateral: its hull, simplified to within this
#: share of its length, keeps at most 4 corners inside the frame; a thick
#: chalk digit's light blob on a dark board keeps 6-8 (its rounded strokes)
_SHEET_CORNERS_TOLERANCE = 0.03
_SHEET_CORNERS = 4
#: regions of the frame from this share on may be the sheet: a sticky note
#: is 1-10% of a phone's photo of the desk it lies on
_SHEET_REGION = 0.01
#: from this share on, a sheet is the brightest large region: paper on a
#: darker table. A smaller one (a sticky note: pink or blue ones are darker
#: than a light desk) must lie whole in the frame (a corner of the table past
#: a sheet's edge, cut by the frame, is a quadrilateral too) and have writing
#: on it (a blank scrap, a phone, an eraser have none)
_SHEET_SMALL = 0.12
#: regions tried, brightest first
_SHEET_TRIED = 6
#: writing: the log of the brightness lifted by this much by the closing that
#: takes the strokes away, over this many connected pixels of the 256 px copy
#: (a pen's stroke; paper's or wood's grain lifts specks of a pixel or two)
_SHEET_WRITING = 0.1
_SHEET_WRITTEN = 8
#: a small sheet is a note or a card: at most this much longer than wide,
#: what is written on it spanning this share of its shorter side (a fifth:
#: a digit on a note far off spans a quarter of it)
_NOTE_ASPECT = 2.5
_NOTE_WRITING_SPAN = 0.2
#: a note told from its desk by colour: its channels this far apart (of 1)
_NOTE_CHROMA = 0.1
#: and it is paper: its median at least this share of the frame's light
#: (its 95th percentile); the hole in a chalk 2's loop is the board's dark,
#: a phone's screen darker still
_NOTE_PAPER = 0.35
#: paper as bright as its table (wood, cloth) is told from it by texture: the
#: log's departure from its 1 px blur, averaged over 9 px of the copy. Smooth:
#: under this many times the frame's smoothest tenth ...
_SMOOTH = 1.6
#: ... a sheet, when the rest is this many times as textured as it (wood:
#: 0.02-0.04 against paper's 0.01-0.03) ...
_TEXTURED = 1.5
#: ... and dark strokes lie wholly inside it, clear of a rim this wide (px),
#: spanning this share of its shorter side: a smooth wall beside a chalk
#: board has only the board's frame, along its rim, and chalk dust
_WRITING_RIM = 4
_SMOOTH_WRITING_SPAN = 0.15
#: a stroke reaching into that rim is writing still when at most this share
#: of its pixels lies there and it reaches this many rims' widths into the
#: sheet: a digit written near the sheet's edge; a frame's edge along the
#: rim, a little wider than it, reaches no deeper
_RIM_SHARE = 0.25
_RIM_DEPTH = 2.5
#: a sheet from 12% of the frame on needs writing inside it too (clear of
#: the rim, spanning this share of its shorter side): a wall above a board,
#: closed off by the board's straight wooden frame, has none
_SHEET_WRITING_SPAN = 0.05


def _outline(sheet: np.ndarray) -> np.ndarray:
    """The largest outer contour of ``sheet`` (0/1 uint8)."""
    contours, _ = cv2.findContours(sheet, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return max(contours, key=cv2.contourArea)


def _note_shaped(outline: np.ndarray) -> float | None:
    """A small sheet's shorter side (px), when it is no longer than :data:`_NOTE_ASPECT` times that:
    a stroke of a thick 1 or a chalk 1 is a convex quadrilateral too, but a long one."""
    sides = cv2.minAreaRect(outline)[1]
    return min(sides) if max(sides) <= _NOTE_ASPECT * min(sides) else None


def _writing(small: np.ndarray, closed: np.ndarray) -> np.ndarray:
    """Where dark strokes are: what the closing lifted by :data:`_SHEET_WRITING` in the log."""
    return _log(closed) - _log(small) > _SHEET_WRITING


def _written_on(writing: np.ndarray, sheet: np.ndarray, side: float) -> bool:
    """Whether something is written on ``sheet`` (clear of its rim): strokes
    (:func:`_writing`) spanning :data:`_NOTE_WRITING_SPAN` of its ``side``."""
    inside = cv2.erode(sheet, _SQUARE3, iterations=2).astype(bool)
    _, _, stats, _ = _components((writing & inside).astype(np.uint8))
    stats = stats[1:][stats[1:, cv2.CC_STAT_AREA] >= _SHEET_WRITTEN]
    span = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    return bool(span.max(initial=0) >= _NOTE_WRITING_SPAN * side)


def _papery(small: np.ndarray, sheet: np.ndarray) -> bool:
    """Whether the small ``sheet`` is as light as paper in this frame
    (:data:`_NOTE_PAPER`): a dark phone with light marks on its screen is not."""
    return quantiles.median(small[sheet == 1]) >= _NOTE_PAPER * float(np.percentile(small, 95))


def _sheet_shaped(sheet: np.ndarray, outline: np.ndarray) -> bool:
    """Convex and a quadrilateral, maybe cut by the frame (:func:`_corners_inside`)."""
    hull = cv2.convexHull(outline)
    return sheet.sum() >= 0.9 * cv2.contourArea(hull) and _corners_inside(hull, sheet.shape) <= _SHEET_CORNERS


def _log(image: np.ndarray) -> np.ndarray:
    """The log of the brightness (in [0, 1]), from 1 of 255 up."""
    return np.log(np.clip(image, 1.0 / 255, 1.0))


def _log_gradient(image: np.ndarray, log: np.ndarray | None = None) -> np.ndarray:
    """How much the log of the brightness (``log``, if already taken) changes
    per pixel: light multiplies, so an edge's strength does not depend on how
    bright the light is there."""
    log = _log(image) if log is None else log
    gradient = cv2.magnitude(cv2.Sobel(log, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(log, cv2.CV_32F, 0, 1, ksize=3)) / 8
    # the strongest colour's: channel by channel (numpy's max along the last axis is ~20x slower)
    return gradient if gradient.ndim == 2 else np.maximum.reduce(cv2.split(gradient))


def _filled(region: np.ndarray) -> np.ndarray:
    """``region`` (uint8 0/1) with its holes filled: what the frame's edge cannot reach around it."""
    outside = np.pad(1 - region, 1, constant_values=1)
    cv2.floodFill(outside, np.zeros((outside.shape[0] + 2, outside.shape[1] + 2), np.uint8), (0, 0), 2)
    return (outside[1:-1, 1:-1] != 2).astype(np.uint8)


def find_sheet(image: np.ndarray) -> np.ndarray | None:
    """Where the sheet is when the photo shows it lying on a table (its edge
    inside the frame): a 0/1 float32 mask at the image's size, or None.

    On a 256 px copy of the brightness, sharp edges (:data:`_SHEET_EDGE`)
    split the frame into regions; the sheet is the brightest of them, its
    holes (what is written on it) filled, that is convex and a quadrilateral
    maybe cut by the frame (:func:`_sheet_shaped`) and covers at most 93% of
    the frame. Covering 12% or more, it must be clearly brighter than the
    rest; a smaller one (a sticky note) must lie whole in the frame with writing
    on it (:data:`_SHEET_SMALL`). A shadow's soft border splits nothing, so a
    shadow is never taken for the sheet's edge. When brightness splits
    nothing, a note may stand out by its colour (:func:`_coloured`, then
    :func:`_note_by_hue` when its edge is soft), and paper
    on wood or cloth by its smoothness (:func:`_smooth_sheet`).
    """
    height, width = image.shape[:2]
    scale = _SHEET_SIDE / max(height, width)
    if max(height, width) < _SCENE_SIDE or min(height, width) * scale < 4 * _SHEET_BAND:
        return None
    # shrunk first, then to gray: the cheaper order for a big photo
    colour = _unit_scale(_shrunk(image, _SHEET_SIDE))
    small = colour if colour.ndim == 2 else cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
    closed = cv2.morphologyEx(small, cv2.MORPH_CLOSE, _SHEET_THIN)
    # where the dark strokes are: taken once, by the first look that needs it
    writing = functools.cache(lambda: _writing(small, closed))
    sheet = _sheet_among(_sheet_edges(small, closed), small, closed, writing)
    if sheet is None and colour.ndim == 3 and _coloured(colour):
        # a note in colour: a pink one on a grey desk differs in hue more than
        # in brightness. Notes only: a board's wooden frame, split from the
        # wall by its colour, would leave the wall a sheet with nothing on it
        edges = _sheet_edges(colour, cv2.morphologyEx(colour, cv2.MORPH_CLOSE, _SHEET_THIN))
        sheet = _sheet_among(edges, small, closed, writing, notes_only=True)
        if sheet is None:
            sheet = _note_by_hue(colour, small, closed, writing)
    if sheet is None:
        sheet = _smooth_sheet(small, writing)
    if sheet is None:
        return None
    return cv2.resize(sheet.astype(np.float32), (width, height), interpolation=cv2.INTER_NEAREST)


def _coloured(colour: np.ndarray) -> bool:
    """Whether a note's worth of the frame (:data:`_SHEET_REGION`) is in
    colour (:data:`_NOTE_CHROMA`): else no note is told apart by its colour."""
    blue, green, red = cv2.split(colour)
    chroma = np.maximum(np.maximum(blue, green), red) - np.minimum(np.minimum(blue, green), red)
    return cv2.countNonZero((chroma > _NOTE_CHROMA).view(np.uint8)) >= _SHEET_REGION * chroma.size


#: a pastel note on a desk as bright as it, its edge too soft to split the
#: frame, is told by its colour: Lab's a and b this far from the frame's median
_NOTE_HUE = 10.0


def _note_by_hue(colour: np.ndarray, small: np.ndarray, closed: np.ndarray,
                 writing: Callable[[], np.ndarray]) -> np.ndarray | None:
    """A note (:func:`_sheet_among`, notes only) among the regions that the
    borders of what differs in colour from most of the frame
    (:data:`_NOTE_HUE`, brightness aside) split it into, itself of that
    colour: a loop drawn in coloured ink encloses paper of the frame's own."""
    # in 8 bits (Lab's a and b in their own units, offset by 128): the
    # conversion and blur a third of float's time, the medians from histograms
    lab = cv2.cvtColor(cv2.convertScaleAbs(colour, alpha=255), cv2.COLOR_BGR2Lab)
    _, a, b = cv2.split(cv2.GaussianBlur(lab, (0, 0), 1.0))  # all three: OpenCV's fast path
    apart = cv2.magnitude(a.astype(np.float32) - quantiles.median_of_counts(a.ravel()),
                          b.astype(np.float32) - quantiles.median_of_counts(b.ravel())) > _NOTE_HUE
    apart = cv2.morphologyEx(apart.view(np.uint8), cv2.MORPH_OPEN, _SQUARE3)
    if cv2.countNonZero(apart) < _SHEET_REGION * apart.size:
        return None  # nothing of another colour as large as a note
    sheet = _sheet_among((apart != cv2.erode(apart, _SQUARE3)).view(bool), small, closed, writing, notes_only=True)
    return sheet if sheet is not None and apart[sheet == 1].mean() >= 0.5 else None


def _sheet_edges(image: np.ndarray, closed: np.ndarray) -> np.ndarray:
    """Sharp edges (:data:`_SHEET_EDGE`) of ``closed`` (``image`` without its
    strokes), long straight fainter ones (:data:`_SHEET_LINE`), and edges of
    ``image`` itself near the frame's edge (:data:`_SHEET_BAND`)."""
    log = _log(closed)
    gradient = _log_gradient(closed, log)
    edges = (gradient > _SHEET_EDGE).astype(np.uint8)
    # sharp: the change over a pixel or two is much of the change nearby; a
    # shadow's border spreads the same change over many
    if log.ndim == 3:
        log = np.maximum.reduce(cv2.split(log))
    nearby = cv2.dilate(log, _SHEET_NEARBY) - cv2.erode(log, _SHEET_NEARBY)
    faint = (gradient > _SHEET_LINE_EDGE) & (gradient > _SHEET_SHARP * nearby)
    lines = cv2.HoughLinesP(faint.view(np.uint8), 1, np.pi / 180, _SHEET_LINE,
                            minLineLength=_SHEET_LINE, maxLineGap=_SHEET_LINE_GAP)
    for x1, y1, x2, y2 in ([] if lines is None else lines.reshape(-1, 4).tolist()):
        cv2.line(edges, (x1, y1), (x2, y2), 1, 1)
    edges = edges.view(bool)
    band = np.ones(edges.shape, bool)
    band[_SHEET_BAND:-_SHEET_BAND, _SHEET_BAND:-_SHEET_BAND] = False
    return edges | (band & (_log_gradient(image) > _SHEET_EDGE))


def _sheet_among(
    edges: np.ndarray, small: np.ndarray, closed: np.ndarray, writing: Callable[[], np.ndarray], notes_only: bool = False
) -> np.ndarray | None:
    """The regions ``edges`` split the frame into, brightest first: the first
    that is a sheet (:func:`find_sheet`), as a 0/1 uint8 mask, or None;
    ``writing()``: :func:`_writing` of the frame."""
    regions = 1 - cv2.dilate(edges.astype(np.uint8), _SQUARE3)
    count, labels, stats, _ = _components(regions, connectivity=4)
    areas = stats[:, cv2.CC_STAT_AREA]
    large = np.flatnonzero(areas[1:] >= _SHEET_REGION * small.size) + 1
    if len(large) < 2:
        return None  # one region: paper (or board) all over, whatever its shadows
    if notes_only:
        large = large[areas[large] < _SHEET_SMALL * small.size]
    # brightest first, by the mean: one pass over all the labels
    means = np.bincount(labels.ravel(), weights=closed.ravel(), minlength=count) / np.maximum(areas, 1)
    whole = _clear_of_edges(stats, *labels.shape)
    for label in large[np.argsort(-means[large], kind="stable")][:_SHEET_TRIED]:
        sheet = _filled((labels == label).astype(np.uint8))
        share = sheet.mean()
        if share > 0.93 or (notes_only and share >= _SHEET_SMALL):
            continue
        outline = _outline(sheet)
        if not _sheet_shaped(sheet, outline):
            continue
        if share >= _SHEET_SMALL:
            if quantiles.median(closed[sheet == 0]) > 0.85 * quantiles.median(closed[sheet == 1]):
                return None
            if _written_inside(writing(), sheet, outline, _SHEET_WRITING_SPAN):
                return sheet
            continue
        side = _note_shaped(outline) if whole[label - 1] else None
        if side is None:
            continue
        if _written_on(writing(), sheet, side) and _papery(small, sheet):
            return sheet
    return None


def _texture(small: np.ndarray) -> np.ndarray:
    """How grainy the copy is around each pixel (:data:`_SMOOTH`)."""
    log = _log(small)
    return cv2.blur(np.abs(log - cv2.GaussianBlur(log, (0, 0), 1.0)), (9, 9))


def _smooth_sheet(small: np.ndarray, writing: Callable[[], np.ndarray]) -> np.ndarray | None:
    """A sheet no brighter than its table, as smooth paper on a grainy table
    (:data:`_SMOOTH`, :data:`_TEXTURED`) with writing inside it (``writing()``:
    :func:`_writing` of the frame): a 0/1 uint8 mask, or None."""
    texture = _texture(small)
    # every other pixel: the texture is an average over 9 px already
    sampled = texture[::2, ::2]
    smooth = (texture < _SMOOTH * quantiles.percentile(sampled, 10)).astype(np.uint8)
    _, labels, stats, _ = _components(cv2.morphologyEx(smooth, cv2.MORPH_OPEN, _SQUARE3), connectivity=4)
    areas = stats[:, cv2.CC_STAT_AREA]
    # from half a sheet's share: the blur and the opening take its rim, the writing its holes
    for label in np.flatnonzero(areas[1:] >= 0.5 * _SHEET_SMALL * small.size) + 1:
        sheet = _filled((labels == label).astype(np.uint8))
        if not _SHEET_SMALL <= sheet.mean() <= 0.93:
            continue
        outline = _outline(sheet)
        if not _sheet_shaped(sheet, outline):
            continue
        inside = sheet[::2, ::2] == 1
        if quantiles.median(sampled[~inside]) < _TEXTURED * quantiles.median(sampled[inside]):
            continue
        if _written_inside(writing(), sheet, outline, _SMOOTH_WRITING_SPAN):
            return sheet
    return None


def _written_inside(writing: np.ndarray, sheet: np.ndarray, outline: np.ndarray, share: float) -> bool:
    """Whether strokes wholly inside ``sheet`` (:func:`_span_inside`) span
    ``share`` of its shorter side (of ``outline``'s least box)."""
    return _span_inside(writing, sheet) >= share * min(cv2.minAreaRect(outline)[1])


def _span_inside(writing: np.ndarray, sheet: np.ndarray) -> int:
    """The widest span (px) of the strokes in ``writing`` lying wholly inside
    ``sheet``, clear of its rim (:data:`_WRITING_RIM`), or reaching into the
    rim from deep inside (:data:`_RIM_SHARE`, :data:`_RIM_DEPTH`)."""
    rim = (sheet == 1) & (cv2.erode(sheet, _SQUARE3, iterations=_WRITING_RIM) == 0)
    count, labels, stats, _ = _components((writing & (sheet == 1)).astype(np.uint8))
    areas = stats[1:, cv2.CC_STAT_AREA]
    on_rim = np.bincount(labels[rim], minlength=count)[1:]
    inside = (on_rim == 0) & (areas >= _SHEET_WRITTEN)
    touching = (on_rim > 0) & (on_rim <= _RIM_SHARE * areas) & (areas >= _SHEET_WRITTEN)
    if touching.any():
        depth = cv2.distanceTransform(sheet, cv2.DIST_L2, 3)
        for index in np.flatnonzero(touching):
            inside[index] = _deepest(depth, labels, stats, index + 1) >= _RIM_DEPTH * _WRITING_RIM
    spans = np.maximum(stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT])
    return int(spans[inside].max(initial=0))


def _corners_inside(hull: np.ndarray, shape: tuple[int, ...]) -> int:
    """Corners of ``hull`` (simplified by :data:`_SHEET_CORNERS_TOLERANCE`)
    clear of the frame's edge: where the frame cuts a sheet, it adds corners of its own."""
    corners = cv2.approxPolyDP(hull, _SHEET_CORNERS_TOLERANCE * cv2.arcLength(hull, True), True)[:, 0, :]
    height, width = shape[:2]
    xs, ys = corners[:, 0], corners[:, 1]
    return int(np.sum((xs > 2) & (xs < width - 3) & (ys > 2) & (ys < height - 3)))


def _on_sheet(image: np.ndarray, sheet: np.ndarray) -> np.ndarray:
    """``image`` cropped to the sheet, with the table past the sheet's edge
    made transparent, for :func:`to_gray` to read it as the sheet's paper.
    Cropped: the paper's noise is then measured on paper, not on a table
    filled with its smooth shade."""
    ys, xs = np.nonzero(sheet.any(axis=1))[0], np.nonzero(sheet.any(axis=0))[0]
    image, sheet = image[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1], sheet[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    colour = np.ascontiguousarray(image[:, :, :3])
    top = 1.0 if image.dtype == np.float32 else float(np.iinfo(image.dtype).max)
    return np.dstack([colour, (sheet * top).astype(image.dtype)])


def normalize_photo(image: np.ndarray) -> np.ndarray:
    """Decoded image (any depth; gray, BGR or BGRA) -> MNIST-style 28x28:
    shrunk to the working size first (at the decoded depth, the cheapest),
    then :func:`ink_gray` and :func:`normalize_mnist`; on the sheet alone when
    it lies on a table (:func:`find_sheet`), and on the whole frame when there
    is no ink on it."""
    if image.ndim == 3 and image.dtype not in (np.uint8, np.uint16, np.float32):
        image = _unit_scale(image)
    image = _shrunk(image, WORK_SIDE)
    # a picture with transparency says itself where its page is
    sheet = find_sheet(image) if image.ndim == 2 or image.shape[2] == 3 else None
    if sheet is not None:
        try:
            on_sheet = _on_sheet(image, sheet)
            gray, light = ink_gray(on_sheet)
            return normalize_mnist(gray, light=light, page=on_sheet[:, :, 3] > 0)
        except EmptyImage:
            pass
    gray, light = ink_gray(image)
    return normalize_mnist(gray, light=light)


def normalize_mnist(gray: np.ndarray, light: bool | None = None, page: np.ndarray | None = None) -> np.ndarray:
    """Gray image in [0, 1] (any size, any polarity; ``light``: the ink is
    lighter than the paper, None: find out; ``page``: where a sheet lying on
    a table is, if it is) -> MNIST-style 28x28."""
    gray = _shrunk(gray, WORK_SIDE)
    if page is not None and page.shape != gray.shape:
        page = cv2.resize(page.view(np.uint8), (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_NEAREST).astype(bool)
    ink = ink_image(gray, light)
    cleaned = without_lines(ink, page)
    # without the lines; else with them (the "lines" were all the ink there is:
    # a thin 1 drawn edge to edge)
    for reading in (cleaned,) if cleaned is ink else (cleaned, ink):
        try:
            mask, floor, level = digit_mask(reading, page)
            ink = reading
            break
        except EmptyImage:
            pass
    else:
        # faint pencil on grainy paper: no pixel stands out of the grain,
        # but a stroke does, once the grain is averaged along it
        ink = cv2.GaussianBlur(cleaned, (0, 0), _GRAIN_BLUR)
        mask, floor, level = digit_mask(ink, page)
    left, top, across, down = cv2.boundingRect(mask.view(np.uint8))  # the bool mask's bytes, not copied
    scale = 20.0 / max(across, down)
    width = stroke_width(_around(mask, (left, top, across, down), 1))
    # a fine pen on a big digit would shrink to faint hairlines; thicken it
    # to MNIST's ~2 px strokes, which is what the model knows
    grow = round(_MNIST_STROKE / scale - width) if width * scale < _MIN_STROKE else 0
    # all that follows reaches no further from the mask than the dilations do:
    # done on that crop, not on the whole picture
    room = 2 + grow // 2
    mask, ink = (_around(image, (left, top, across, down), room) for image in (mask, ink))
    ink = np.maximum(ink, 0.0)
    # strokes at full strength, background and specks at zero, edges kept soft
    near = cv2.dilate(mask.astype(np.uint8), _SQUARE3).astype(bool)
    clean = np.where(near, np.clip((ink - floor) / max(level - floor, 1e-6), 0.0, 1.0), 0.0).astype(np.float32)
    if grow >= 2:
        clean = cv2.dilate(clean, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow)))
    left, top, across, down = cv2.boundingRect((clean > 0).view(np.uint8))
    if across == 0:
        raise EmptyImage("no ink: the image is blank")
    return centre_digit(clean[top : top + down, left : left + across])


def _around(image: np.ndarray, box: tuple[int, int, int, int], room: int) -> np.ndarray:
    """``image`` cropped to ``box`` (left, top, width, height) and ``room`` px around it, as far as the image goes."""
    left, top, across, down = box
    return image[max(0, top - room) : top + down + room, max(0, left - room) : left + across + room]
