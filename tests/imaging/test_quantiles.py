"""The exact quantiles: numpy's own results, bit for bit, on every shape the transform feeds them.

Pure: random arrays from fixed seeds; numpy is the reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from streamapp.imaging import quantiles
from streamapp.imaging.normalize import _labelled


def arrays(dtype: type, count: int = 400):
    rng = np.random.default_rng(20261206)
    for trial in range(count):
        size = int(rng.integers(1, 1500)) if trial > 3 else trial + 1  # sizes 1-4 first: the edges
        kind = trial % 4
        if kind == 0:
            values = rng.random(size)
        elif kind == 1:  # signed, around zero: ink's background
            values = rng.normal(size=size) * 0.1
        elif kind == 2:  # few distinct values: quantised grey levels, many ties
            values = rng.integers(0, 5, size) / 7
        else:  # mostly one value: a blank paper with a few strokes
            values = np.where(rng.random(size) < 0.8, 0.0, rng.random(size))
        yield values.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_median_is_numpys(dtype):
    for values in arrays(dtype):
        assert quantiles.median(values) == float(np.median(values))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("q", [0, 0.5, 1, 25.0, 50, 75, 99, 99.5, 100])
def test_one_percentile_is_numpys(dtype, q):
    # one Python number as q: numpy interpolates in the array's dtype
    for values in arrays(dtype, 150):
        assert quantiles.percentile(values, q) == float(np.percentile(values, q))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_several_percentiles_are_numpys(dtype):
    # a tuple of q: numpy interpolates in float64
    for values in arrays(dtype, 150):
        qs = (0.5, 50, 99.5)
        assert quantiles.percentiles(values, qs) == [float(p) for p in np.percentile(values, qs)]


def test_any_shape_is_read_as_numpy_reads_it():
    values = np.random.default_rng(3).random((28, 28)).astype(np.float32)
    assert quantiles.median(values) == float(np.median(values))
    assert quantiles.percentile(values, 75) == float(np.percentile(values, 75))
    assert quantiles.percentiles(values, (0.5, 99.5)) == [float(p) for p in np.percentile(values, (0.5, 99.5))]


def test_the_input_is_not_reordered():
    values = np.array([3.0, 1.0, 2.0, 0.0], np.float32)
    quantiles.median(values), quantiles.percentile(values, 75), quantiles.percentiles(values, (10, 90))
    assert values.tolist() == [3.0, 1.0, 2.0, 0.0]


def test_labelled_is_isin():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 12, (28, 28)).astype(np.int32)
    for wanted in ([], [1], [3, 11], list(range(12))):
        wanted = np.array(wanted, np.intp)
        assert np.array_equal(_labelled(labels, wanted), np.isin(labels, wanted))


def test_the_median_of_counts_is_numpys():
    rng = np.random.default_rng(17)
    for size in [*range(1, 40), 999, 1000, 1001]:
        for high in (1, 3, 18, 256):  # 256: an 8-bit plane (Lab's a, b in _note_by_hue)
            counts = rng.integers(0, high, size).astype(np.uint8 if high == 256 else np.int64)
            expected = float(np.median(counts.astype(np.float64)))
            assert quantiles.median_of_counts(counts) == expected, (size, high)
            assert quantiles.median_of_counts(counts) == quantiles.median(counts.astype(np.float64))
