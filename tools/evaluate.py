"""Score the bundled model on the held-out split and on the photo set.

Reads: the held-out MNIST digits and MNIST's test file (:mod:`tools.mnist_data`), the photo set
(:mod:`tools.photos`, generated in memory), the model (bundled, or ``--model``).
Writes: a report on stdout.

    .venv/bin/python -m tools.evaluate            # ~2 min on 2 cores
    .venv/bin/python -m tools.evaluate --photos 300 --speed

Four figures:

* raw: the held-out 28x28 arrays straight into the model;
* MNIST test: MNIST's 10,000 test digits, raw (never trained on either);
* plain through transform: each digit written as a 28x28 PNG and read back
  through ``to_tensor(mode="mnist")``, the path real uploads take;
* photo set: one synthetic photograph per digit through the same path
  (and, for contrast, through the KServe sample's transform).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from streamapp.errors import ImageError
from streamapp.imaging.tensor import to_tensor
from streamapp.serving.model import DigitModel
from tools import mnist_data, photos


def confusion(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    matrix = np.zeros((10, 10), np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def format_confusion(matrix: np.ndarray) -> str:
    lines = ["true\\pred " + " ".join(f"{d:>4}" for d in range(10))]
    for digit, row in enumerate(matrix):
        lines.append(f"{digit:>9} " + " ".join(f"{n:>4}" for n in row))
    return "\n".join(lines)


def png_bytes(digit: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", (digit * 255).round().astype(np.uint8))
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    return buf.tobytes()


def throughput(model: DigitModel, images: np.ndarray) -> dict[int, float]:
    """Images per second of ``predict_proba`` at several batch sizes."""
    rates = {}
    for batch in (1, 8, 32, 128):
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < 2.0:
            model.predict_proba(images[(done % 1000) : (done % 1000) + batch])
            done += batch
        rates[batch] = done / (time.perf_counter() - started)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="weights file (default: the bundled one)")
    parser.add_argument("--photos", type=int, default=None, help="photo set size (default: all 1,800)")
    parser.add_argument("--speed", action="store_true", help="also measure predict_proba throughput")
    args = parser.parse_args()

    model = DigitModel.load(args.model)
    images, labels = mnist_data.held_out()
    print(f"model {model.name} version {model.version} ({model.meta['nets']} nets); "
          f"held-out split: {len(images)} digits never trained on")

    raw = model.predict(images)
    print(f"held-out accuracy, raw 28x28:                 {np.mean(raw == labels):.2%} "
          f"({np.sum(raw != labels)} wrong)")

    test_images, test_labels = mnist_data.mnist_test()
    test_raw = model.predict(test_images)
    print(f"MNIST test file accuracy, raw 28x28:          {np.mean(test_raw == test_labels):.2%} "
          f"({np.sum(test_raw != test_labels)} wrong of {len(test_labels)})")

    tensors = np.stack([to_tensor(png_bytes(image), mode="mnist") for image in images])
    plain = model.predict(tensors)
    print(f"held-out accuracy, PNG through to_tensor:     {np.mean(plain == labels):.2%} "
          f"({np.sum(plain != labels)} wrong)")

    photo_labels, photo_tensors, failures, kinds, sample_right = [], [], 0, [], 0
    for photo in photos.photo_set(args.photos):
        # for contrast: the KServe sample's transform on the same photo
        sample_tensor = to_tensor(photo.data, mode="kserve-sample")
        sample_right += int(model.predict(sample_tensor[None])[0] == photo.label)
        try:
            photo_tensors.append(to_tensor(photo.data))
        except ImageError:
            failures += 1  # counted as wrong
            continue
        photo_labels.append(photo.label)
        kinds.append(photo.kind.split()[0])
    photo_pred = model.predict(np.stack(photo_tensors))
    right = photo_pred == np.array(photo_labels)
    total = len(photo_labels) + failures
    print(f"photo-set accuracy (through to_tensor):       {right.sum() / total:.2%} "
          f"({total - right.sum()} wrong of {total}; {failures} rejected)")
    print(f"photo-set accuracy with mode=\"kserve-sample\": {sample_right / total:.2%} (for contrast)")
    kinds = np.array(kinds)
    print("  by format: " + ", ".join(
        f"{kind} {right[kinds == kind].mean():.1%} (n={np.sum(kinds == kind)})" for kind in sorted(set(kinds))))

    print("\nconfusion matrix, held-out raw:")
    print(format_confusion(confusion(labels, raw)))
    print("\nconfusion matrix, photo set:")
    print(format_confusion(confusion(np.array(photo_labels), photo_pred)))

    if args.speed:
        print("\npredict_proba throughput (images/s): " + ", ".join(
            f"batch {batch}: {rate:,.0f}" for batch, rate in throughput(model, images).items()))


if __name__ == "__main__":
    main()
