"""The retry policy: backoff with jitter, and which faults are retried."""

from __future__ import annotations

import asyncio

import pytest

from streamapp import errors
from streamapp.pipeline.retry import backoff_delays, retry_until_done


def test_backoff_doubles_with_jitter_up_to_the_maximum():
    top = [round(d, 3) for _, d in zip(range(7), backoff_delays(0.1, 1.0, jitter=lambda: 1.0), strict=False)]
    assert top == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    low = [round(d, 3) for _, d in zip(range(3), backoff_delays(0.1, 1.0, jitter=lambda: 0.0), strict=False)]
    assert low == [0.05, 0.1, 0.2]


def test_retry_until_done_retries_dependency_faults_only():
    calls = []

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise errors.StorageUnavailable("connection refused")
        return "ok"

    assert asyncio.run(retry_until_done(flaky, what="get", initial=0.001, maximum=0.002)) == "ok"
    assert len(calls) == 3

    async def bad():
        raise errors.EmptyImage("zero bytes")

    with pytest.raises(errors.EmptyImage):
        asyncio.run(retry_until_done(bad, what="get", initial=0.001, maximum=0.002))
