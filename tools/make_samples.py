"""Regenerate the bundled sample images, deterministically.

Reads: the held-out MNIST digits, the photo generator (:mod:`tools.photos`)
and the bundled model.
Writes: ``streamapp/assets/samples/`` (emptied first): 6 digits per class as
28x28 PNGs, ``<label>-<index>.png``, plus one photo-style JPEG per class,
``<label>-<index>-photo.jpg``; ``index`` is the position in the held-out split.

The PNGs are dark ink on white (``255 - digit``): the way a digit looks on
paper, and what the KServe sample's ``255 - img`` expects, so both transform
modes turn them back into the original MNIST tensor.

Choice: candidates come in a seeded random order; the first ones the model
classifies correctly through the default transform are kept. That is the
only filter, so the samples are as hard as held-out digits in general
(misclassified ones are skipped because integration tests assert on them).
Re-run after retraining the model.

    .venv/bin/python -m tools.make_samples
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from streamapp.imaging.tensor import to_tensor
from streamapp.serving.model import DigitModel
from tools import mnist_data, photos

OUT = Path(__file__).resolve().parents[1] / "streamapp" / "assets" / "samples"
SEED = 2718
PER_DIGIT = 6
PHOTOS_PER_DIGIT = 1
#: keeps the bundle small: photos larger than this are passed over
MAX_PHOTO_BYTES = 14_000


def main() -> None:
    model = DigitModel.load()
    images, labels = mnist_data.held_out()
    order = np.random.default_rng(SEED).permutation(len(images))
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.iterdir():
        if old.suffix in (".png", ".jpg"):
            old.unlink()
    plain = {digit: 0 for digit in range(10)}
    shots = {digit: 0 for digit in range(10)}
    for index in order.tolist():
        label = int(labels[index])
        if plain[label] < PER_DIGIT:
            _, buf = cv2.imencode(".png", 255 - (images[index] * 255).round().astype(np.uint8),
                                   [cv2.IMWRITE_PNG_COMPRESSION, 9])
            data = buf.tobytes()
            if model.predict(to_tensor(data)[None])[0] == label:
                (OUT / f"{label}-{index:04d}.png").write_bytes(data)
                plain[label] += 1
        if shots[label] < PHOTOS_PER_DIGIT:
            data, kind = photos.photograph(images[index], np.random.default_rng([photos.SEED, index]))
            if kind.startswith("jpeg") and len(data) <= MAX_PHOTO_BYTES and model.predict(to_tensor(data)[None])[0] == label:
                (OUT / f"{label}-{index:04d}-photo.jpg").write_bytes(data)
                shots[label] += 1
    files = sorted(OUT.iterdir())
    total = sum(path.stat().st_size for path in files)
    print(f"wrote {len(files)} samples to {OUT} ({total / 1024:.0f} KiB) with model {model.version}")


if __name__ == "__main__":
    main()
