"""The normalisation's shortcuts give exactly what the long way gives: the
same medians, k-th largest values, connected components and finished digit,
only in less time on a big photo."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from streamapp.imaging import normalize, quantiles
from streamapp.imaging.normalize import (
    _around,
    _components,
    _kth_largest,
    centre_digit,
    normalize_mnist,
    stroke_width,
)
from tests.imaging.drawing import seven

_RNG = np.random.default_rng(20261206)


def _periodic() -> np.ndarray:
    """Every 8th value far above the rest: a strided sample sees only those, so the shortcut must fall back."""
    values = _RNG.normal(size=(256, 512)).astype(np.float32)
    values.ravel()[::8] = 100.0
    return values


_ARRAYS = {
    "noise": _RNG.normal(size=(783, 1024)).astype(np.float32),
    "odd size": _RNG.normal(size=(301, 303)).astype(np.float32),
    "ties": _RNG.integers(0, 4, (600, 800)).astype(np.float32),
    "sparse ink": np.where(_RNG.random((768, 1024)) < 0.004, 1.0, 0.0).astype(np.float32),
    "skewed": (_RNG.random((500, 700)) ** 8).astype(np.float32),
    "half bright": np.vstack([_RNG.normal(size=(300, 640)), _RNG.normal(5, 1, size=(300, 640))]).astype(np.float32),
    "every other pixel": _RNG.normal(size=(900, 900)).astype(np.float32)[::2, ::2],
    "one row": _RNG.normal(size=(1, 90_000)).astype(np.float32),
    "flat": _RNG.normal(size=250_000).astype(np.float32),
    "small": _RNG.normal(size=(20, 30)).astype(np.float32),
    "periodic": _periodic(),
}


@pytest.mark.parametrize("name", list(_ARRAYS))
def test_median_is_numpys(name):
    values = _ARRAYS[name]
    assert quantiles.median(values) == float(np.median(values))
    deviation = np.abs(values - quantiles.median(values))
    assert quantiles.median(deviation) == float(np.median(deviation))


@pytest.mark.parametrize("name", list(_ARRAYS))
def test_kth_largest_is_the_kth_of_all_values_sorted(name):
    values = _ARRAYS[name]
    flat = np.sort(values, axis=None)
    k = min(max(3, flat.size // 5000), 50)
    assert _kth_largest(values) == float(flat[-k])
    assert _kth_largest(-values) == float(-flat[k - 1])


def test_kth_largest_of_fewer_values_than_k_is_the_largest():
    assert _kth_largest(np.float32([0.2, 0.7])) == pytest.approx(0.7)


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("share", [0.005, 0.3, 0.5])
def test_components_are_the_32_bit_labelling(connectivity, share):
    binary = (_RNG.random((400, 700)) < share).astype(np.uint8)  # 0.5: more set pixels than 16 bits can count
    count, labels, stats, centroids = _components(binary, connectivity)
    wide = cv2.connectedComponentsWithStats(binary, connectivity=connectivity, ltype=cv2.CV_32S)
    assert labels.dtype == (np.uint16 if binary.sum() < 65535 else np.int32)
    assert count == wide[0] and np.array_equal(labels, wide[1])
    assert np.array_equal(stats, wide[2]) and np.array_equal(centroids, wide[3])


def test_around_keeps_room_round_the_box_as_far_as_the_image_goes():
    image = np.arange(100 * 80).reshape(100, 80)
    assert np.array_equal(_around(image, (10, 20, 30, 40), 3), image[17:63, 7:43])
    assert np.array_equal(_around(image, (1, 0, 79, 100), 5), image)


def _finished_on_the_whole_picture(ink: np.ndarray, mask: np.ndarray, floor: float, level: float) -> np.ndarray:
    """normalize_mnist's last steps as they were before they moved to a crop around the mask."""
    ink = np.maximum(ink, 0.0)
    near = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    clean = np.where(near, np.clip((ink - floor) / max(level - floor, 1e-6), 0.0, 1.0), 0.0).astype(np.float32)
    ys, xs = np.nonzero(mask)
    scale = 20.0 / max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
    width = stroke_width(mask)
    if width * scale < 1.5:
        grow = round(2.2 / scale - width)
        if grow >= 2:
            clean = cv2.dilate(clean, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow)))
    ys, xs = np.nonzero(clean > 0)
    return centre_digit(clean[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])


@pytest.mark.parametrize(("size", "thickness", "corner"), [
    (300, 3, (0, 0)),        # a fine pen, thickened: its dilation reaches past the image's corner
    (300, 3, (0.4, 0.3)),    # the same, clear of the edges
    (400, 2, (1, 1)),        # wider still, at the far corner
    (120, 14, (0.2, 0.5)),   # a marker: nothing to thicken
])
def test_the_digit_is_finished_near_its_mask_as_on_the_whole_picture(monkeypatch, size, thickness, corner):
    digit = seven(size, thickness)
    ys, xs = np.nonzero(digit)
    digit = digit[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    strokes = np.zeros((768, 1024), np.float32)
    top, left = (round(share * (whole - part)) for share, whole, part in zip(corner, strokes.shape, digit.shape, strict=True))
    strokes[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    # noise of both signs all over, which only the mask's surroundings may keep
    ink = strokes + np.float32(0.15) * _RNG.normal(size=strokes.shape).astype(np.float32)
    mask, floor, level = strokes > 0.5, 0.1, 0.9
    monkeypatch.setattr(normalize, "ink_image", lambda gray, light: ink)
    monkeypatch.setattr(normalize, "without_lines", lambda image, page=None: image)
    monkeypatch.setattr(normalize, "digit_mask", lambda image, page=None: (mask, floor, level))
    tensor = normalize_mnist(np.zeros(ink.shape, np.float32))
    assert np.array_equal(tensor, _finished_on_the_whole_picture(ink, mask, floor, level))
