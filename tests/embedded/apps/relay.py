"""A Faust app for the embedded-broker loss test: relays every message, counts keys.

Reads: topic ``relay-in`` (or ``$RELAY_IN``; raw keys and values). Writes:
``relay-out`` (or ``$RELAY_OUT``): each value followed by ``@<input timestamp
ms>``, so a test can check that every input came out and how long it took; and
the table ``relayed`` (key -> count), whose changelog recovery on every
rebalance opens the window where Faust's fetch loop and its seek race. Its
``/counts/`` page shows this worker's assignment and whether recovery is over.

Run as ``python -m faust -A relay worker`` with ``tests/embedded/apps`` on the
path; broker URL, web port and data directory come from the environment.
"""

from __future__ import annotations

import os
from typing import Any

import faust

app = faust.App(
    os.environ.get("RELAY_APP_ID", "embedded-relay"),
    broker="kafka://localhost:9092",  # BROKER_URL from the environment wins
    store="memory://",
    topic_partitions=4,
)

source = app.topic(
    os.environ.get("RELAY_IN", "relay-in"),
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
)
sink = app.topic(
    os.environ.get("RELAY_OUT", "relay-out"),
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
)
relayed = app.Table("relayed", default=int, partitions=4)


@app.agent(source)
async def relay(stream: faust.StreamT) -> None:
    async for event in stream.events():
        relayed[event.key.decode()] += 1
        stamp = int(event.message.timestamp * 1000)
        await sink.send(key=event.key, value=event.value + b"@%d" % stamp)


@app.page("/counts/")
async def show_state(web: Any, request: Any) -> Any:
    assignment = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == source.get_topic_name())
    return web.json({"assignment": assignment, "recovered": app.tables.recovery.completed.is_set()})
