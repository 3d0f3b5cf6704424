"""Image bytes -> the 28x28 tensor the predictor takes: formats, then normalisation.

Two modes:

* ``"kserve-sample"``: exactly the KServe sample's transformer: grayscale,
  ``255 - img``, ``cv2.resize`` to 28x28, ``/ 255``. Only right for dark
  digits on a white image that is already tightly cropped.
* ``"mnist"`` (default): :func:`streamapp.imaging.normalize.normalize_photo`,
  the MNIST normalisation applied to photographs.
"""

from __future__ import annotations

import asyncio

import cv2
import numpy as np

from streamapp.errors import EmptyImage
from streamapp.imaging.formats import DEFAULT_MAX_PIXELS, checked, decode, image_size, photo_flags
from streamapp.imaging.normalize import WORK_SIDE, normalize_photo

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
    return normalize_photo(decode(data, photo_flags(kind, max(width, height), WORK_SIDE)))


def use_one_thread() -> None:
    """Run OpenCV's image functions on the calling thread only (a process-wide setting).

    By default OpenCV keeps a worker per core that spins (``sched_yield``)
    between calls: measured here, 2.3 ms of CPU per MNIST-sized image instead
    of 0.8, and the same wall time for a 12-megapixel photo. The worker calls
    this when it starts; its cores are shared with the broker, S3 and the
    predictor anyway.
    """
    cv2.setNumThreads(1)


#: images up to this many pixels (MNIST-sized scans) are transformed on the
#: caller's event loop, in at most ~1.6 ms; larger ones in a thread
INLINE_MAX_PIXELS = 64 * 64


async def transform(data: bytes, *, mode: str = "mnist", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """:func:`to_tensor` from a coroutine, keeping the event loop responsive.

    A photo takes tens of ms, which OpenCV spends mostly without the GIL: it
    goes to a thread. A small image takes under a millisecond, and the thread
    hop would cost more CPU than that (GIL hand-offs; docs/BENCHMARKS.md).
    """
    size = image_size(data)
    if size is not None and size[0] * size[1] <= INLINE_MAX_PIXELS:
        return to_tensor(data, mode=mode, max_pixels=max_pixels)
    return await asyncio.to_thread(to_tensor, data, mode=mode, max_pixels=max_pixels)
