"""tools/transform_time.py: every set is timed, the bench's samples and each hard category."""

from __future__ import annotations

from tools import hard_photos, transform_time


def test_times_the_samples_and_every_category(mnist_held_out):
    figures = transform_time.timings(per_category=1, sample_rounds=1)
    assert set(figures) == {"bench samples", *hard_photos.CATEGORIES}
    for name, (mean, p95) in figures.items():
        assert 0 < mean < 10_000 and 0 < p95 < 10_000, name
