"""A tiny Faust app for the embedded-broker tests: counts messages per key.

Reads: topic ``counter-in`` (or ``$COUNTER_TOPIC``) (raw string keys, raw values). Writes: the table
``counts`` (key -> messages seen, partitioned like the topic) and the global
table ``seen`` (key -> the same count, replicated to every worker), both
changelogged to the broker, and ``GET /counts/`` on the worker's web port:
the tables, this worker's assignment and when its first message arrived.

Run as ``python -m faust -A counter worker`` with ``tests/embedded/apps`` on
the path; the broker URL, web port and data directory come from the
environment (``BROKER_URL``, ``WEB_PORT``, ``APP_DATADIR``).
"""

from __future__ import annotations

import os
import time
from typing import Any

import faust

APP_ID = os.environ.get("COUNTER_APP_ID", "embedded-counter")
SOURCE = os.environ.get("COUNTER_TOPIC", "counter-in")

app = faust.App(
    APP_ID,
    broker="kafka://localhost:9092",  # BROKER_URL from the environment wins
    store="memory://",
    topic_partitions=4,
    # batch changelog writes so the changelog holds multi-record batches,
    # the case where the broker's ListOffsets answers short of the end
    producer_linger=0.05,
)

source = app.topic(SOURCE, key_type=str, value_type=bytes, key_serializer="raw", value_serializer="raw")
counts = app.Table("counts", default=int, partitions=4)
# recovery_buffer_size=1: without it each worker saw only its own keys at run
# time (faust-streaming issue #283)
seen = app.GlobalTable("seen", default=int, partitions=4, recovery_buffer_size=1)

# per-process facts for the test, not per-event state
stats: dict[str, Any] = {"processed": 0, "first_message_at": None}


@app.agent(source)
async def count(stream: faust.StreamT) -> None:
    async for key, _value in stream.items():
        if stats["first_message_at"] is None:
            stats["first_message_at"] = time.time()
        counts[key] += 1
        seen[key] = counts[key]
        stats["processed"] += 1


@app.page("/counts/")
async def show_counts(web: Any, request: Any) -> Any:
    assignment = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == SOURCE)
    return web.json(
        {
            "counts": dict(counts.items()),
            "seen": dict(seen.items()),
            "assignment": assignment,
            # set once table recovery is over and the agents run
            "recovered": app.tables.recovery.completed.is_set(),
            **stats,
        }
    )
