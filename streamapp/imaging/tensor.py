"""Image bytes -> the 28x28 tensor the predictor takes: formats, then normalisation.

Two modes:

* ``"kserve-sample"``: exactly the KServe sample's transformer: grayscale,
  ``255 - img``, ``cv2.resize`` to 28x28, ``/ 255``. Only right for dark
  digits on a white image that is already tightly cropped.
* ``"mnist"`` (default): :func:`streamapp.imaging.normalize.normalize_mnist`,
  the MNIST normalisation applied to photographs.
"""

from __future__ import annotations

import cv2
import numpy as np

from streamapp.errors import EmptyImage
from streamapp.imaging.formats import DEFAULT_MAX_PIXELS, checked, decode, gray_flags
from streamapp.imaging.normalize import WORK_SIDE, normalize_mnist, to_gray

MODES = ("mnist", "kserve-sample")


def to_tensor(data: bytes, *, mode: str = "mnist", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Image bytes -> (28, 28) float32 in [0, 1], white ink on black."""
    if mode not in MODES:
        raise ValueError(f"unknown transform mode {mode!r}; expected one of {MODES}")
    kind, (width, height) = checked(data, max_pixels)
    if mode == "kserve-sample":
        img = decode(data, cv2.IMREAD_GRAYSCALE)
        if img.min() == img.max():
            raise EmptyImage("no ink: the image is one flat colour")
        # the sample's exact arithmetic: uint8 255 - img, bilinear resize, / 255.0
        return (cv2.resize(255 - img, (28, 28)).flatten() / 255.0).reshape(28, 28).astype(np.float32)
    return normalize_mnist(to_gray(decode(data, gray_flags(kind, max(width, height), WORK_SIDE))))
