"""Preloading counted images into a table's changelog, as if they had been counted.

Reads: nothing. Writes: changelog records of the ``images`` table straight to
the broker (``<app id>-images-changelog``), exactly as Faust's tally writes
them (JSON key: the image identity; JSON value: the digit), so that a worker
started afterwards recovers them through Faust's own recovery, the path a
real restart takes. The bench's state section and the recovery tests use it
to reach a large N in seconds rather than hours.
"""

from __future__ import annotations

import json
from collections import Counter

from aiokafka import AIOKafkaProducer


def changelog_topic(app_id: str, table: str = "images") -> str:
    """Faust's name for a table's changelog topic."""
    return f"{app_id}-{table}-changelog"


def preloaded_identity(index: int, run: str = "preload") -> str:
    """The identity (``bucket/key@etag``) of the ``index``-th preloaded image."""
    return f"images/{run}/{index:08d}.png@{index:032x}"


async def preload_counted(bootstrap: str, topic: str, *, partitions: int, count: int, start: int = 0,
                          run: str = "preload") -> Counter[int]:
    """Write ``count`` counted images (digit = index % 10) round-robin over
    ``partitions``; return the digit counts they add."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks=1)
    await producer.start()
    added: Counter[int] = Counter()
    try:
        pending = []
        for index in range(start, start + count):
            digit = index % 10
            key = json.dumps(preloaded_identity(index, run)).encode()
            pending.append(await producer.send(topic, key=key, value=str(digit).encode(), partition=index % partitions))
            added[digit] += 1
            if len(pending) >= 20_000:
                for future in pending:
                    await future
                pending.clear()
        for future in pending:
            await future
    finally:
        await producer.stop()
    return added
