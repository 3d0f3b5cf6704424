"""Retry with backoff for dependencies that are down.

Reads: an async operation that raises ``DependencyDown`` while S3 or the
predictor is unreachable. Writes: its result, once it succeeds.

There is no retry limit on purpose: the input stays un-acked (its Kafka offset
is not committed) until the dependency is back, so nothing is lost or
dead-lettered because a server was restarting. Bad input never reaches this
loop; it raises ``BadInput`` and is dead-lettered by the caller.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from streamapp.errors import DependencyDown

log = logging.getLogger(__name__)

T = TypeVar("T")


def backoff_delays(initial: float, maximum: float, *, jitter: Callable[[], float] = random.random) -> Iterator[float]:
    """Exponential delays with "equal jitter": each in [d/2, d], d doubling up to ``maximum``.

    Jitter keeps several workers that lost the same dependency from retrying
    in lockstep; the lower half keeps each wait meaningful.
    """
    delay = initial
    while True:
        yield delay / 2 + jitter() * delay / 2
        delay = min(maximum, delay * 2)


async def retry_until_done(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    initial: float,
    maximum: float,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Run ``operation`` until it does not raise ``DependencyDown``; return its result.

    ``on_retry`` is called before each retry (the worker counts them).
    """
    delays = backoff_delays(initial, maximum)
    attempt = 0
    while True:
        try:
            result = await operation()
        except DependencyDown as exc:
            attempt += 1
            delay = next(delays)
            log.warning("%s failed (attempt %d): %s; retrying in %.2fs", what, attempt, exc, delay)
            if on_retry is not None:
                on_retry()
            await asyncio.sleep(delay)
        else:
            if attempt:
                log.info("%s succeeded after %d retries", what, attempt)
            return result
