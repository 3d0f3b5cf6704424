"""The MNIST normalisation, applied to photographs (pure image math: OpenCV + numpy).

Reads: a decoded picture (any depth; gray, BGR or BGRA).
Writes: nothing; returns a (28, 28) float32 array in [0, 1], white ink on
black, or raises :class:`streamapp.errors.EmptyImage`.

What MNIST itself was made with: find the ink whatever its polarity, flatten
uneven paper, crop the digit, fit it in 20x20 keeping its aspect ratio, and
centre its centre of mass in the 28x28 field.
"""

from __future__ import annotations

import cv2
import numpy as np

from streamapp.errors import EmptyImage

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


#: a ruled or grid line runs across at least this share of the image; a digit's
#: own longest stroke (a 7's bar, tightly cropped) spans ~55% of a 28 px image
_LINE_SPAN = 0.85


def without_lines(ink: np.ndarray) -> np.ndarray:
    """``ink`` with ruled and grid lines taken out: two or more parallel,
    straight horizontal or vertical runs of ink across most of the image,
    which no digit has. Where a line crossed a stroke the gap is closed again
    along the line's width."""
    height, width = ink.shape
    if min(height, width) < 40:  # a tight crop, MNIST-sized: nothing to rule
        return ink
    flat = ink.ravel()
    median = float(np.median(flat))
    noise = 1.4826 * float(np.median(np.abs(flat - median)))
    # what stands out of the paper: lines are fainter than ink, but a quantised
    # gradient's steps (a palette image) are fainter still
    marked = (ink > max(median + 4 * noise, 0.2 * _kth_largest(flat))).astype(np.uint8)
    lines = np.zeros_like(marked)
    for length, horizontal in ((round(width * _LINE_SPAN), True), (round(height * _LINE_SPAN), False)):
        # bridge the breaks noise and JPEG leave in a thin line, then keep only long runs
        bridge = np.ones((1, 9) if horizontal else (9, 1), np.uint8)
        kernel = np.ones((1, length) if horizontal else (length, 1), np.uint8)
        found = cv2.morphologyEx(cv2.morphologyEx(marked, cv2.MORPH_CLOSE, bridge), cv2.MORPH_OPEN, kernel)
        _, labels, stats, _ = cv2.connectedComponentsWithStats(found, connectivity=8)
        # thin runs only: a band of shade (a quantised gradient) spans the image too
        across = stats[1:, cv2.CC_STAT_HEIGHT if horizontal else cv2.CC_STAT_WIDTH]
        thin = np.flatnonzero(across <= max(6, 0.02 * (height if horizontal else width))) + 1
        # ruled paper has several parallel lines; one long run alone may be a digit's
        # own stroke (a tightly cropped 1), so it stays
        if len(thin) >= 2:
            lines |= np.isin(labels, thin).astype(np.uint8)
    if not lines.any():
        return ink
    # the lines' full width, soft edges included
    lines = cv2.dilate(lines, np.ones((3, 3), np.uint8))
    cleaned = np.where(lines.astype(bool), np.minimum(ink, 0.0), ink).astype(np.float32)
    # strokes the lines crossed: close the cut across it (a line is at most a few px wide)
    across = cv2.morphologyEx(cleaned, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    return np.where(lines.astype(bool), np.maximum(cleaned, across), cleaned).astype(np.float32)


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
    if max(height, width) > WORK_SIDE:
        scale = WORK_SIDE / max(height, width)
        gray = cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    ink = without_lines(ink_image(gray))
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
