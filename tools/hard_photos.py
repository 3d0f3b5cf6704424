"""Digits as people photograph them: the hard categories, one at a time.

Reads: the held-out MNIST digits (:mod:`tools.mnist_data`).
Writes: nothing to disk unless asked; yields encoded image bytes in memory.

Each category is a named option, so a failure can be traced to one cause:

* ``ruled``: ruled or squared paper, lines crossing the canvas and the digit;
* ``shadow``: a hard-edged or soft shadow and uneven light across the page;
* ``colour_ink``: red, green or blue ballpoint, faint, on white or tinted paper;
* ``chalk``: a light, broken stroke on a dark textured board;
* ``small``: the digit 5-15% of the frame's height on a 1200x900-1600x1200 canvas;
* ``pen``: rotated up to 15 degrees, a very thick marker or a very thin pen;
* ``formats``: progressive JPEG at quality 40-90, palette PNG, grey+alpha PNG.

Photo ``i`` of a category depends only on ``(SEED, category, i)``: the set
is the same on every machine, and a category can be made alone.

    .venv/bin/python -m tools.hard_photos --evaluate 50     # per-category accuracy, 50 per digit
    .venv/bin/python -m tools.hard_photos --show 3 --out .cache/hard   # 3 per category, as files
"""

from __future__ import annotations

import argparse
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from tools import mnist_data
from tools.photos import Photo

SEED = 271828
CATEGORIES = ("ruled", "shadow", "colour_ink", "chalk", "small", "pen", "formats")


def _ink_mask(digit: np.ndarray, side: int, rng: np.random.Generator, *, rotate: float = 0.0,
              stroke: int = 0) -> np.ndarray:
    """The 28x28 digit as a ``side`` px ink mask in [0, 1], optionally rotated and its strokes grown or thinned."""
    mask = np.clip(cv2.resize(digit.astype(np.float32), (side, side), interpolation=cv2.INTER_CUBIC), 0, 1)
    if stroke:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (abs(stroke), abs(stroke)))
        mask = cv2.dilate(mask, kernel) if stroke > 0 else cv2.erode(mask, kernel)
    if rotate:
        matrix = cv2.getRotationMatrix2D((side / 2, side / 2), rotate, 1.0)
        mask = cv2.warpAffine(mask, matrix, (side, side), flags=cv2.INTER_LINEAR, borderValue=0)
    return mask * rng.uniform(0.8, 1.0)


def _place(mask: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """``mask`` at a random place on a ``height`` x ``width`` canvas."""
    side = mask.shape[0]
    canvas = np.zeros((height, width), np.float32)
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    canvas[top : top + side, left : left + side] = mask
    return canvas


def _compose(alpha: np.ndarray, paper: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """BGR image in [0, 1]: ``ink`` over ``paper`` (a colour or an image) by ``alpha``."""
    paper_image = paper if paper.ndim == 3 else np.broadcast_to(paper, (*alpha.shape, 3))
    return paper_image * (1 - alpha[..., None]) + ink[None, None, :] * alpha[..., None]


def _finish(image: np.ndarray, rng: np.random.Generator, *, blur: float = 0.8) -> np.ndarray:
    sigma = rng.uniform(0.0, blur)
    if sigma > 0.3:
        image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma)
    image = image + rng.normal(0, rng.uniform(0.005, 0.03), image.shape)
    return np.clip(image, 0, 1).astype(np.float32)


def _jpeg(image: np.ndarray, quality: int, *, progressive: bool = False) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] + ([cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if progressive else [])
    ok, buf = cv2.imencode(".jpg", (image * 255).round().astype(np.uint8), params)
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return buf.tobytes()


def _canvas(side: int, rng: np.random.Generator, extra: tuple[int, int] = (60, 400)) -> tuple[int, int]:
    return side + int(rng.integers(*extra)), side + int(rng.integers(*extra))


def _tilted(page: np.ndarray, degrees: float) -> np.ndarray:
    """The middle of ``page`` turned by ``degrees``: the page is made with a margin
    (:func:`ruled`) that the turn moves into view, so every line runs on straight to the edge."""
    height, width = page.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    turned = cv2.warpAffine(page.astype(np.float32), matrix, (width, height), flags=cv2.INTER_LINEAR)
    return turned[_TILT_MARGIN:-_TILT_MARGIN, _TILT_MARGIN:-_TILT_MARGIN]


#: what :func:`_tilted` cuts off each side: enough for a 10 degree turn of a 640 px page
_TILT_MARGIN = 120


def ruled(digit: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    side = int(rng.integers(80, 220))
    height, width = _canvas(side, rng)
    # the page with a margin all round (see _tilted), the digit near enough the
    # middle that a turn keeps it in view
    inner = max(side, round(height * 0.75)), max(side, round(width * 0.75))
    pad_y, pad_x = _TILT_MARGIN + (height - inner[0]) // 2, _TILT_MARGIN + (width - inner[1]) // 2
    height, width = height + 2 * _TILT_MARGIN, width + 2 * _TILT_MARGIN
    alpha = np.zeros((height, width), np.float32)
    alpha[pad_y : pad_y + inner[0], pad_x : pad_x + inner[1]] = _place(_ink_mask(digit, side, rng), *inner, rng)
    paper = np.ones((height, width, 3), np.float32) * rng.uniform(0.85, 0.98)
    spacing = int(rng.integers(max(12, side // 6), max(13, side // 2)))
    line = np.array(rng.choice([[0.85, 0.65, 0.45], [0.7, 0.7, 0.7], [0.6, 0.6, 0.85]]))  # blue, grey, pink (BGR)
    weight = int(rng.integers(1, 4))
    offset = int(rng.integers(0, spacing))
    squared = rng.random() < 0.4
    for y in range(offset, height, spacing):
        paper[y : y + weight] = line
    if squared:
        for x in range(offset, width, spacing):
            paper[:, x : x + weight] = line
    if rng.random() < 0.5:  # the margin line of a notebook
        x = int(rng.integers(0, width))
        paper[:, x : x + weight + 1] = [0.4, 0.4, 0.9]
    faint = rng.random() < 0.4  # a faint ballpoint, fainter than the lines (the red 7 a user lost)
    if faint:
        alpha = alpha * rng.uniform(0.35, 0.7)
    ink = np.array(rng.choice([[0.15, 0.1, 0.1], [0.5, 0.2, 0.1], [0.2, 0.2, 0.2], [0.25, 0.2, 0.85], [0.3, 0.6, 0.2]]))
    image = _compose(alpha, paper, ink)
    tilt = rng.uniform(-10, 10) if rng.random() < 0.5 else 0.0  # the notebook not square to the camera
    image = _tilted(image, tilt)
    kind = ("squared" if squared else "ruled") + (", faint" if faint else "") + (f", tilted {tilt:+.0f} deg" if tilt else "")
    return _finish(image, rng), kind


def shadow(digit: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    side = int(rng.integers(60, 240))
    height, width = _canvas(side, rng)
    alpha = _place(_ink_mask(digit, side, rng), height, width, rng)
    image = _compose(alpha, np.full(3, rng.uniform(0.8, 0.97), np.float32), np.array([0.12, 0.1, 0.1]))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    distance = np.cos(angle) * (xs - width * rng.uniform(0.2, 0.8)) + np.sin(angle) * (ys - height * rng.uniform(0.2, 0.8))
    softness = rng.uniform(2, max(3, side * 0.8))  # a hand's shadow: sharp; a lamp's: soft
    dark = rng.uniform(0.35, 0.75)
    light = 1 - dark / (1 + np.exp(-distance / softness))
    gradient = 1 - rng.uniform(0, 0.3) * (xs / width if rng.random() < 0.5 else ys / height)
    kind = "hard shadow" if softness < 10 else "soft shadow"
    return _finish(image * (light * gradient)[..., None], rng), kind


def colour_ink(digit: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    side = int(rng.integers(60, 240))
    height, width = _canvas(side, rng)
    alpha = _place(_ink_mask(digit, side, rng), height, width, rng) * rng.uniform(0.25, 0.9)  # faint
    name = str(rng.choice(["red", "green", "blue"]))
    ink = {"red": [0.25, 0.2, 0.85], "green": [0.3, 0.6, 0.2], "blue": [0.8, 0.35, 0.15]}[name]
    # white, cream, mint, lilac, pink, sky: some the ink's own hue
    tint = rng.choice([[0.97, 0.97, 0.97], [0.8, 0.92, 0.98], [0.85, 0.97, 0.9], [0.95, 0.88, 0.9],
                       [0.88, 0.85, 0.98], [0.98, 0.92, 0.85]])
    paper = np.array(tint, np.float32) * rng.uniform(0.9, 1.0)
    return _finish(_compose(alpha, paper, np.array(ink, np.float32)), rng), f"{name} ink"


def chalk(digit: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    side = int(rng.integers(80, 260))
    height, width = _canvas(side, rng)
    mask = _ink_mask(digit, side, rng, stroke=int(rng.integers(2, 6)))
    grain = rng.random(mask.shape).astype(np.float32)
    mask = mask * (grain > rng.uniform(0.15, 0.4)) * rng.uniform(0.6, 0.95)  # chalk leaves gaps
    alpha = _place(mask, height, width, rng)
    board = np.array(rng.choice([[0.2, 0.28, 0.18], [0.16, 0.16, 0.16], [0.1, 0.15, 0.1]]), np.float32)
    texture = cv2.GaussianBlur(rng.normal(0, 0.05, (height, width)).astype(np.float32), (0, 0), 3)
    smudges = cv2.GaussianBlur((rng.random((height, width)) < 0.002).astype(np.float32), (0, 0), 25) * 8
    background = board[None, None, :] + (texture + smudges * 0.15)[..., None]
    image = _compose(alpha, background.astype(np.float32), np.array([0.92, 0.92, 0.9], np.float32))
    return _finish(image, rng, blur=1.2), "chalk"


def small(digit: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    width = int(rng.integers(1200, 1601))
    height = int(width * rng.uniform(0.72, 0.78))
    share = rng.uniform(0.05, 0.15)  # the digit's height as a share of the frame's
    side = max(12, round(height * share * 28 / 20))  # MNIST's digit fills 20 of its 28 px
    alpha = _place(_ink_mask(digit, side, rng), height, width, rng)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 1 - 0.35 * (((xs / width) - 0.5) ** 2 + ((ys / height) - 0.5) ** 2)  # a phone's vignette
    image = _compose(alpha, np.full(3, rng.uniform(0.78, 0.95), np.float32), np.array([0.12, 0.1, 0.1]))
    return _finish(image * light[..., None], rng, blur=1.0), f"small {share:.0%} of {width}x{height}"


def pen(digit: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    side = int(rng.integers(100, 260))
    height, width = _canvas(side, rng)
    thick = rng.random() < 0.5
    stroke = int(rng.integers(max(3, side // 14), max(4, side // 7))) if thick else -int(rng.integers(2, max(3, side // 25)))
    angle = rng.uniform(-15, 15)
    mask = _ink_mask(digit, side, rng, rotate=angle, stroke=stroke)
    if not thick and mask.max() < 0.3:  # thinned away: keep the thinnest that stays
        mask = _ink_mask(digit, side, rng, rotate=angle, stroke=-2)
    alpha = _place(mask, height, width, rng)
    image = _compose(alpha, np.full(3, rng.uniform(0.82, 0.97), np.float32), np.array([0.1, 0.1, 0.12]))
    return _finish(image, rng, blur=0.6), f"{'marker' if thick else 'thin pen'} {angle:+.0f} deg"


def formats(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    side = int(rng.integers(60, 220))
    height, width = _canvas(side, rng)
    alpha = _place(_ink_mask(digit, side, rng), height, width, rng)
    image = _finish(_compose(alpha, np.full(3, rng.uniform(0.8, 0.97), np.float32), np.array([0.15, 0.1, 0.1])), rng)
    kind = str(rng.choice(["progressive jpeg", "palette png", "grey+alpha png"]))
    if kind == "progressive jpeg":
        quality = int(rng.integers(40, 91))
        return _jpeg(image, quality, progressive=True), f"{kind} q{quality}"
    grey = (cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) * 255).round().astype(np.uint8)
    if kind == "palette png":
        return _palette_png(grey, colours=int(rng.integers(8, 65))), kind
    opacity = np.full(grey.shape, 255, np.uint8)
    margin = int(rng.integers(0, 20))
    if margin:
        opacity[:margin] = 0
        opacity[:, :margin] = 0
    return _grey_alpha_png(grey, opacity), kind


def _png(width: int, height: int, colour_type: int, rows: bytes, extra_chunks: list[tuple[bytes, bytes]]) -> bytes:
    """A PNG written by hand: OpenCV writes neither palette nor grey+alpha PNGs."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, colour_type, 0, 0, 0])
    body = b"".join(chunk(kind, data) for kind, data in extra_chunks)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + body + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")


def _palette_png(grey: np.ndarray, colours: int) -> bytes:
    levels = np.linspace(0, 255, colours).round().astype(np.uint8)
    index = np.abs(grey[..., None].astype(np.int16) - levels[None, None, :]).argmin(axis=2).astype(np.uint8)
    rows = b"".join(b"\x00" + row.tobytes() for row in index)
    palette = np.repeat(levels[:, None], 3, axis=1).tobytes()
    return _png(grey.shape[1], grey.shape[0], 3, rows, [(b"PLTE", palette)])


def _grey_alpha_png(grey: np.ndarray, opacity: np.ndarray) -> bytes:
    pixels = np.dstack([grey, opacity])
    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)
    return _png(grey.shape[1], grey.shape[0], 4, rows, [])


MAKERS = {"ruled": ruled, "shadow": shadow, "colour_ink": colour_ink, "chalk": chalk, "small": small, "pen": pen,
          "formats": formats}


def hard_photo(category: str, digit: np.ndarray, index: int, seed: int = SEED) -> tuple[bytes, str]:
    """One photo of ``category`` from a 28x28 white-on-black digit: encoded bytes and a description."""
    rng = np.random.default_rng([seed, CATEGORIES.index(category), index])
    made, kind = MAKERS[category](digit, rng)
    if isinstance(made, bytes):
        return made, kind
    quality = int(rng.integers(70, 96))
    return _jpeg(made, quality), f"{kind}, jpeg q{quality}"


def hard_set(category: str, per_digit: int, seed: int = SEED) -> Iterator[Photo]:
    """``per_digit`` photos of each digit 0-9 in ``category``, from the held-out split only."""
    if category not in MAKERS:
        raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")
    images, labels = mnist_data.held_out()
    for digit in range(10):
        for index in np.flatnonzero(labels == digit)[:per_digit].tolist():
            data, kind = hard_photo(category, images[index], index, seed)
            yield Photo(data=data, label=digit, index=index, kind=kind)


def evaluate(per_digit: int, categories: tuple[str, ...] = CATEGORIES) -> dict[str, dict[str, float]]:
    """Per category: accuracy through the pipeline's transform and model, and images refused (dead letters)."""
    from streamapp.errors import ImageError
    from streamapp.imaging.tensor import to_tensor, use_one_thread
    from streamapp.serving.model import DigitModel

    use_one_thread()
    model = DigitModel.load()
    results = {}
    for category in categories:
        tensors, labels, refused, seconds = [], [], Counter(), []
        for photo in hard_set(category, per_digit):
            labels.append(photo.label)
            started = time.perf_counter()  # the transform alone, not the making of the photo
            try:
                tensors.append(to_tensor(photo.data))
            except ImageError as exc:
                refused[exc.kind] += 1
                tensors.append(None)
            seconds.append(time.perf_counter() - started)
        good = [t for t in tensors if t is not None]
        predicted = iter(model.predict_proba(np.stack(good)).argmax(axis=1).tolist() if good else [])
        correct = sum(1 for t, label in zip(tensors, labels, strict=True) if t is not None and next(predicted) == label)
        results[category] = {"images": len(labels), "accuracy": correct / len(labels),
                             "refused": sum(refused.values()), "transform_ms": float(np.mean(seconds)) * 1000,
                             "transform_p95_ms": float(np.percentile(seconds, 95)) * 1000}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--category", action="append", choices=CATEGORIES, help="one category (repeatable); default all")
    parser.add_argument("--show", type=int, metavar="N", help="write N photos per category (of digits 0..N-1) to --out")
    parser.add_argument("--out", type=Path, default=mnist_data.CACHE_DIR / "hard-photos")
    parser.add_argument("--evaluate", type=int, metavar="PER_DIGIT", help="accuracy per category, PER_DIGIT photos of each digit")
    args = parser.parse_args()
    categories = tuple(args.category or CATEGORIES)
    if args.show:
        args.out.mkdir(parents=True, exist_ok=True)
        for category in categories:
            for photo in list(hard_set(category, 1))[: args.show]:
                path = args.out / f"{category}-{photo.label}-{photo.index:04d}.{'png' if 'png' in photo.kind else 'jpg'}"
                path.write_bytes(photo.data)
                print(path, photo.kind)
    if args.evaluate:
        print(f"{'category':<11} {'images':>6} {'accuracy':>9} {'refused':>8} {'transform ms':>13} {'p95 ms':>7}")
        for category, figures in evaluate(args.evaluate, categories).items():
            print(f"{category:<11} {figures['images']:>6} {figures['accuracy']:>9.1%} {figures['refused']:>8} "
                  f"{figures['transform_ms']:>13.1f} {figures['transform_p95_ms']:>7.1f}")


if __name__ == "__main__":
    main()
