"""A reproducible set of "photographed" digits, made from the held-out split only.

Reads: the held-out MNIST digits (:mod:`tools.mnist_data`).
Writes: nothing to disk; yields encoded image bytes in memory.

Each held-out digit becomes one photo: dark ink (black, blue or pencil grey)
on tinted paper under uneven light (a gradient, a vignette and a soft
shadow), the digit 40-260 px tall at a random place on a larger canvas,
blurred, with sensor noise, then encoded as JPEG (quality 55-95), PNG, WebP,
BMP or TIFF; some PNGs carry an alpha channel (some with transparent
margins), some PNG/TIFF are 16-bit, some are grayscale. Photo ``i`` depends
only on ``(SEED, i)``, so the set is the same on every machine.

    .venv/bin/python -m tools.photos --show 12   # write 12 examples to .cache/photos/
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tools import mnist_data

SEED = 314159
FORMATS = ("jpeg", "jpeg", "jpeg", "png", "png", "webp", "bmp", "tiff")


@dataclass(frozen=True)
class Photo:
    data: bytes
    label: int
    index: int  # position in the held-out split
    kind: str   # e.g. "jpeg q71", "png rgba16"


def _lighting(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative light field: gradient, vignette, a soft shadow."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ys /= max(height - 1, 1)
    xs /= max(width - 1, 1)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * (xs - 0.5) + np.sin(angle) * (ys - 0.5)) * rng.uniform(0.0, 0.45)
    vignette = ((xs - 0.5) ** 2 + (ys - 0.5) ** 2) * rng.uniform(0.0, 0.6)
    light = 1.0 - gradient - vignette
    if rng.random() < 0.4:
        cy, cx, radius = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.2, 0.6)
        shadow = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * radius**2))
        light -= shadow * rng.uniform(0.1, 0.3)
    return np.clip(light, 0.35, 1.1)


def photograph(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """One 28x28 white-on-black digit -> encoded photo bytes and a description."""
    size = rng.uniform(40, 260)  # the digit's 20 px MNIST box, in photo pixels
    scale = size / 20.0
    side = max(8, round(28 * scale))
    ink = np.clip(cv2.resize(digit, (side, side), interpolation=cv2.INTER_CUBIC), 0, 1)
    height = side + int(rng.integers(20, 360))
    width = side + int(rng.integers(20, 360))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    alpha = np.zeros((height, width), np.float32)
    alpha[top : top + side, left : left + side] = ink * rng.uniform(0.75, 1.0)

    paper = rng.uniform(0.72, 0.97) + rng.uniform(-0.07, 0.07, 3)  # tint per channel (BGR)
    ink_colour = [
        np.array([0.12, 0.1, 0.1]),   # black ballpoint
        np.array([0.45, 0.15, 0.1]),  # blue ballpoint (BGR)
        np.array([0.35, 0.35, 0.35]),  # pencil
    ][int(rng.integers(0, 3))] * rng.uniform(0.6, 1.2)
    image = paper[None, None, :] * (1 - alpha[..., None]) + ink_colour[None, None, :] * alpha[..., None]
    image *= _lighting(height, width, rng)[..., None]
    sigma = rng.uniform(0.0, 0.8 + scale * 0.25)
    if sigma > 0.3:
        image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma)
    image = image + rng.normal(0, rng.uniform(0.005, 0.04), image.shape)
    image = np.clip(image, 0, 1).astype(np.float32)

    fmt = FORMATS[int(rng.integers(0, len(FORMATS)))]
    gray = rng.random() < 0.2
    if gray:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if fmt == "jpeg":
        quality = int(rng.integers(55, 96))
        ok, buf = cv2.imencode(".jpg", (image * 255).round().astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
        kind = f"jpeg q{quality}"
    elif fmt == "webp":
        quality = int(rng.integers(60, 101))
        ok, buf = cv2.imencode(".webp", (image * 255).round().astype(np.uint8), [cv2.IMWRITE_WEBP_QUALITY, quality])
        kind = f"webp q{quality}"
    elif fmt == "bmp":
        ok, buf = cv2.imencode(".bmp", (image * 255).round().astype(np.uint8))
        kind = "bmp"
    else:
        deep = rng.random() < 0.4
        pixels = (image * 65535).round().astype(np.uint16) if deep else (image * 255).round().astype(np.uint8)
        kind = f"{fmt}{' 16-bit' if deep else ''}"
        if fmt == "png" and not gray and rng.random() < 0.4:
            # RGBA: opaque, or with transparent (black) margins as a cut-out would have
            top_max = np.iinfo(pixels.dtype).max
            opacity = np.full(pixels.shape[:2], top_max, pixels.dtype)
            if rng.random() < 0.5:
                margin = int(rng.integers(3, 15))
                opacity[:margin] = 0
                opacity[:, -margin:] = 0
                pixels = pixels.copy()
                pixels[opacity == 0] = 0
            pixels = np.dstack([pixels, opacity])
            kind += " rgba"
        ext = ".png" if fmt == "png" else ".tif"
        ok, buf = cv2.imencode(ext, pixels)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {kind}")
    return buf.tobytes(), kind + (" gray" if gray else "")


def photo_set(count: int | None = None, seed: int = SEED) -> Iterator[Photo]:
    """The photo set: one photo per held-out digit.

    ``count`` takes an evenly spaced subset (the split is ordered by class);
    photo ``i`` is the same whether or not the others are made.
    """
    images, labels = mnist_data.held_out()
    indices = np.arange(len(images))
    if count is not None and count < len(images):
        indices = np.unique(np.linspace(0, len(images) - 1, count).round().astype(int))
    for index in indices.tolist():
        data, kind = photograph(images[index], np.random.default_rng([seed, index]))
        yield Photo(data=data, label=int(labels[index]), index=index, kind=kind)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--show", type=int, default=12, help="how many to write")
    parser.add_argument("--out", type=Path, default=mnist_data.CACHE_DIR / "photos")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    extensions = {"jpeg": "jpg", "png": "png", "webp": "webp", "bmp": "bmp", "tiff": "tif"}
    for photo in photo_set(args.show):
        path = args.out / f"{photo.label}-{photo.index:04d}.{extensions[photo.kind.split()[0]]}"
        path.write_bytes(photo.data)
        print(path, photo.kind, len(photo.data))


if __name__ == "__main__":
    main()
