"""tools.mnist_data: MNIST's idx files, and the training set that leaves the held-out split out."""

from __future__ import annotations

import numpy as np
import pytest

from tools import mnist_data


def idx(array: np.ndarray) -> bytes:
    """``array`` (uint8) as an idx file, as MNIST ships them."""
    header = (0x0800 + array.ndim).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_parse_idx_reads_the_header_and_the_bytes():
    images = np.arange(2 * 28 * 28, dtype=np.uint32).reshape(2, 28, 28) % 256
    assert np.array_equal(mnist_data.parse_idx(idx(images), 3), images)
    assert mnist_data.parse_idx(idx(np.array([7, 2, 1])), 1).tolist() == [7, 2, 1]


def test_parse_idx_refuses_another_layout_or_a_short_file():
    labels = idx(np.array([7, 2, 1]))
    with pytest.raises(mnist_data.DataError, match="magic"):
        mnist_data.parse_idx(labels, 3)
    with pytest.raises(mnist_data.DataError, match="header says"):
        mnist_data.parse_idx(labels[:-1], 1)


def test_without_leaves_out_the_images_equal_at_three_decimals():
    rng = np.random.default_rng(1)
    images = (rng.integers(0, 256, (6, 28, 28)) / 255).astype(np.float32)
    labels = np.arange(6)
    # the held-out copies come from JSON: the same digits rounded to 3 decimals
    held = np.round(images[[1, 4]], 3)
    kept, kept_labels = mnist_data.without(images, labels, held)
    assert kept_labels.tolist() == [0, 2, 3, 5]
    assert np.array_equal(kept, images[[0, 2, 3, 5]])


def test_without_refuses_when_an_excluded_image_is_not_found_once():
    images = np.zeros((3, 28, 28), np.float32)
    images[1, 5, 5] = 1.0
    with pytest.raises(mnist_data.DataError, match="match"):
        mnist_data.without(images, np.arange(3), np.ones((1, 28, 28), np.float32))  # not there
    with pytest.raises(mnist_data.DataError, match="match"):
        mnist_data.without(images, np.arange(3), images[:1])  # two images equal it


def test_the_training_set_holds_no_held_out_digit(mnist_held_out):
    try:
        images, labels = mnist_data.training_set()
    except mnist_data.DataError as exc:
        pytest.skip(f"MNIST data unavailable: {exc}")
    assert images.shape == (58_200, 28, 28) and images.dtype == np.float32
    assert np.bincount(labels, minlength=10).min() > 5_000
    held = {row.tobytes() for row in np.rint(mnist_held_out[0].reshape(1_800, -1) * 1000).astype(np.int16)}
    assert not any(row.tobytes() in held for row in np.rint(images.reshape(len(images), -1) * 1000).astype(np.int16))
