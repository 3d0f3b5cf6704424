"""streamapp.kafka.transport's spacing rule (pure, no broker): when requests
are spaced under load, and how far apart."""

from __future__ import annotations

import pytest

from streamapp.kafka.transport import LONGEST_SPACING, RECORDS_PER_REQUEST, SPACED_FROM, RecentRate, spacing_for

LINGER = 0.03


def test_a_light_load_is_not_spaced() -> None:
    # 20 images/s through three topics on one worker: 60 records/s
    assert spacing_for(60.0, LINGER) == 0.0
    assert spacing_for(SPACED_FROM - 1, LINGER) == 0.0
    assert spacing_for(60.0, 2 * LINGER) == 0.0  # a longer linger holds a light load no more
    assert spacing_for(1000.0, 0.0) == 0.0  # no linger configured: never held


def test_a_heavy_load_is_spaced_a_linger_apart() -> None:
    # one worker at ~100 images/s: 300 records/s fill a request in under a linger
    assert spacing_for(300.0, LINGER) == LINGER
    assert spacing_for(10_000.0, LINGER) == LINGER


def test_between_the_spacing_grows_to_fill_a_request_within_its_cap() -> None:
    # two workers sharing ~80 images/s: 120 records/s each
    assert spacing_for(120.0, LINGER) == pytest.approx(RECORDS_PER_REQUEST / 120.0)
    at_threshold = SPACED_FROM
    assert spacing_for(at_threshold, LINGER) == pytest.approx(min(RECORDS_PER_REQUEST / at_threshold,
                                                                  LONGEST_SPACING * LINGER))
    assert LINGER <= spacing_for(at_threshold, LINGER) <= LONGEST_SPACING * LINGER


def test_the_rate_is_of_the_last_window_and_not_of_one_burst() -> None:
    rate = RecentRate(window=1.0)
    assert rate.per_second(0.0, LINGER) == 0.0
    rate.add(10.0, 30)
    assert rate.per_second(10.0, LINGER) == 0.0  # one burst alone is no rate
    for step in range(1, 11):
        rate.add(10.0 + step * 0.1, 30)
    # each count holds what came since the one before: 10 counts of 30 in the second since the first
    assert rate.per_second(11.0, LINGER) == pytest.approx(300 / 1.0)
    assert rate.per_second(11.05, LINGER) == pytest.approx(270 / 0.95)  # the first count has left the window
    assert rate.per_second(12.5, LINGER) == 0.0  # nothing in the last second


def test_a_light_load_counted_far_apart_does_not_count_itself_busy() -> None:
    """56 records a second counted every 125 ms (a long spacing) are 56 a
    second; with the first count's records, the last second would hold 63."""
    rate = RecentRate(window=1.0)
    for step in range(40):
        rate.add(step * 0.125, 7)
    now = 39 * 0.125
    assert rate.per_second(now, LINGER) == pytest.approx(7 * 8)
    assert spacing_for(rate.per_second(now, LINGER), LINGER) == 0.0
