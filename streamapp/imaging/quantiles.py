"""Exact ``np.median`` and ``np.percentile`` (linear) of a float array, cheaper than numpy's.

Reads: a float32 or float64 array without NaN. Writes: the same float numpy
gives, bit for bit. numpy's general path (axes, NaN checks, methods) costs
~30-60 us a call whatever the size; an MNIST-sized image is 784 values, and
the transform reads four such statistics per image. These call
``np.partition`` at the ranks numpy reads and repeat its arithmetic
(numpy/lib/_function_base_impl.py: ``_median``, ``_quantile``, ``_lerp``);
a big photo's median partitions only what a sample brackets.
tests/imaging/test_quantiles.py and test_shortcuts.py hold them to numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: from this many values on, a strided sample brackets the middle ranks first
_SAMPLED_FROM = 40_000


def median(values: np.ndarray) -> float:
    """``float(np.median(values))``, any shape.

    On a big picture (a 1024 px photo: a million values) a sample of 16,384
    brackets the middle ranks and only the values between the brackets are
    partitioned, a fifth of the time; the whole, if the sample missed them.
    """
    flat = values.ravel()
    size = flat.size
    ranks = ((size - 1) // 2, size // 2)  # one rank twice for an odd size
    if size >= _SAMPLED_FROM:
        sample = flat[:: max(1, size // 16384)]
        # 3 sqrt(n) ranks either side: six standard deviations of where the median falls in a random sample
        middle, reach = sample.size // 2, int(3 * np.sqrt(sample.size)) + 2
        brackets = [max(0, middle - reach), min(sample.size - 1, middle + reach)]
        low, high = np.partition(sample, brackets)[brackets]
        below = int(np.count_nonzero(flat < low))
        band = flat[(flat >= low) & (flat <= high)]
        inside = (ranks[0] - below, ranks[1] - below)
        if inside[0] >= 0 and inside[1] < band.size:
            return _middle(np.partition(band, inside), inside)
    return _middle(np.partition(flat, ranks), ranks)


def median_of_counts(counts: np.ndarray) -> float:
    """:func:`median` of small non-negative integers (a line's ink pixels
    across it, 0-17; an 8-bit plane), bit for bit, from their histogram: a
    tenth of the time of a partition on a 1,000-value row. Not empty."""
    size = counts.size
    ranks = ((size - 1) // 2, size // 2)
    values = np.searchsorted(np.cumsum(np.bincount(counts)), ranks, side="right")
    return _middle(values.astype(np.float64), (0, 1) if ranks[0] != ranks[1] else (0, 0))


def _middle(part: np.ndarray, ranks: tuple[int, int]) -> float:
    # numpy: the mean of the two middle values, summed in the array's dtype
    if ranks[0] == ranks[1]:
        return float(part[ranks[0]])
    return float(part.dtype.type((part[ranks[0]] + part[ranks[1]]) / np.intp(2)))


def _ranks(size: int, q: float) -> tuple[float, int, int]:
    # numpy's "linear" virtual index and its neighbours, clipped to the array
    virtual = (size - 1) * (q / 100)
    below = min(max(math.floor(virtual), 0), size - 1)
    return virtual, below, min(below + 1, size - 1)


def _lerp(low: np.floating, high: np.floating, gamma: float | np.float64) -> float:
    # numpy's _lerp: from the nearer end, so the result is monotonic
    diff = high - low
    return float(high - diff * (1 - gamma) if gamma >= 0.5 else low + diff * gamma)


def percentile(values: np.ndarray, q: float) -> float:
    """``float(np.percentile(values, q))`` (method "linear") for one ``q``."""
    values = values.ravel()
    virtual, below, above = _ranks(values.size, q)
    part = np.partition(values, (below, above) if above != below else below)
    # one Python number as q: numpy interpolates in the array's own dtype
    return _lerp(part[below], part[above], float(virtual - below))


def percentiles(values: np.ndarray, qs: Sequence[float]) -> list[float]:
    """``[float(p) for p in np.percentile(values, qs)]`` (method "linear") for several."""
    values = values.ravel()
    ranks = [_ranks(values.size, q) for q in qs]
    part = np.partition(values, sorted({rank for _, below, above in ranks for rank in (below, above)}))
    # a sequence of q: numpy interpolates in float64
    return [_lerp(part[below], part[above], np.float64(virtual - below)) for virtual, below, above in ranks]
