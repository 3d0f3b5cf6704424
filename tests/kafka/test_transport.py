"""streamapp.kafka.transport: the rebalance faults of Faust with aiokafka, without a broker.

Each test drives the one method of Faust's consumer that the transport
changes, with Faust's own method beside it where the fault shows. The same
transport runs under every integration test (the embedded broker's
``tansu://`` builds on it), and the no-loss and graceful-stop tests in
tests/embedded/test_broker.py measure it end to end on a real broker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from streamapp.kafka import transport


def test_the_last_commit_is_not_skipped_for_a_commit_in_flight() -> None:
    """Faust's last commit (end of ``wait_empty``) returns without committing
    while a periodic commit is in flight, whose offsets predate the acks
    since; the transport waits for that one and then commits."""
    from faust.transport.consumer import Consumer as FaustConsumer

    async def last_commit(commit_and_end_transactions: Callable[..., Any]) -> list[Any]:
        consumer = object.__new__(transport.Consumer)  # no transport needed
        consumer.app = SimpleNamespace(client_only=False)  # type: ignore[assignment]
        consumer.loop = asyncio.get_running_loop()
        forced: list[Any] = []

        async def force_commit(topics: Any = None, start_new_transaction: bool = True) -> bool:
            forced.append(topics)
            return True

        consumer.force_commit = force_commit  # type: ignore[method-assign]
        in_flight = consumer.loop.create_future()
        consumer._commit_fut = in_flight  # the periodic commit, still sending
        last = asyncio.create_task(commit_and_end_transactions(consumer))
        for _ in range(10):  # loop turns, not time: the task runs until it waits (or ends)
            await asyncio.sleep(0)
        consumer._commit_fut = None  # as Faust's commit() ends: clear, then notify
        in_flight.set_result(None)
        await last
        return forced

    assert asyncio.run(last_commit(FaustConsumer.commit_and_end_transactions)) == []  # skipped
    assert asyncio.run(last_commit(transport.Consumer.commit_and_end_transactions)) == [None]  # every topic




def test_uncommitted_stream_partitions_are_rewound_too() -> None:
    """The first-records loss of the no-loss test, without a broker.

    After a rebalance Faust rewinds the stream partitions to their committed
    offsets, so that records its fetch loop took and dropped are read again;
    aiokafka skips partitions without a commit, which kept their position
    past the dropped records. The transport resets those (and only stream
    partitions: changelogs are positioned by table recovery) to the start.
    """
    from aiokafka.structs import TopicPartition as AIOTopicPartition

    new, committed, zero, changelog = (
        AIOTopicPartition("in", 0),
        AIOTopicPartition("in", 1),
        AIOTopicPartition("in", 2),
        AIOTopicPartition("app-table-changelog", 0),
    )

    class Thread:
        def __init__(self) -> None:
            self.rewound: list[Any] = []

        async def seek_to_committed(self) -> dict[Any, int | None]:
            return {new: None, committed: 42, zero: 0, changelog: None}

        async def seek_to_beginning(self, *partitions: Any) -> None:
            self.rewound.extend(partitions)

    for reset, expected in (("earliest", [new, zero]), ("latest", [])):
        consumer = object.__new__(transport.Consumer)  # no transport needed
        consumer._thread = Thread()  # type: ignore[assignment]
        consumer.app = SimpleNamespace(  # type: ignore[assignment]
            tables=SimpleNamespace(changelog_topics={changelog.topic}),
            conf=SimpleNamespace(consumer_auto_offset_reset=reset),
        )
        offsets = asyncio.run(consumer.seek_to_committed())
        assert offsets[committed] == 42 and offsets[new] is None  # Faust's view unchanged
        assert consumer._thread.rewound == expected, reset  # type: ignore[attr-defined]


def test_an_emptied_active_set_fetches_nothing() -> None:
    """aiokafka reads an empty partition filter as "every partition".

    Faust passes its live set of active partitions to the fetch; pausing the
    changelogs at the end of table recovery empties it while the fetch waits,
    and the records of the paused stream partitions came back (then dropped).
    """
    stream, changelog = TopicPartition("in", 0), TopicPartition("app-table-changelog", 0)
    live = {changelog}
    buffered = [stream, changelog]
    seen: list[list[Any]] = []

    class Fetcher:
        _closed = False
        _subscriptions = SimpleNamespace(fetch_context=lambda: contextlib.nullcontext())

        async def fetched_records(self, partitions: Any, timeout: float = 0, max_records: int | None = None) -> dict:
            live.clear()  # paused by the main thread while the fetch waits
            # aiokafka's own filter (Fetcher.fetched_records)
            drained = [tp for tp in buffered if not (partitions and tp not in partitions)]
            live.add(changelog)  # resumed: the filter follows the live set
            seen.append([tp for tp in buffered if not (partitions and tp not in partitions)])
            return {tp: [] for tp in drained}

    thread = object.__new__(transport.ConsumerThread)
    thread.consumer = SimpleNamespace(flow_active=True)  # type: ignore[assignment]
    kafka_consumer = SimpleNamespace(_fetcher=Fetcher(), _closed=False)
    assert asyncio.run(thread._fetch_records(kafka_consumer, live, timeout=1.0)) == {}  # type: ignore[arg-type]
    assert seen == [[changelog]]


def test_workers_use_the_transport_for_kafka_urls(monkeypatch) -> None:
    """``kafka://`` (production) and ``tansu://`` (embedded) both run the fixed consumer."""
    from streamapp.app import StreamApp
    from streamapp.embedded import tansu
    from streamapp.settings import Settings

    for url, expected in (
        ("kafka://localhost:9092", transport.Transport),
        ("aiokafka://localhost:9092", transport.Transport),
        ("tansu://127.0.0.1:9092", tansu.TansuTransport),
    ):
        monkeypatch.setenv("BROKER_URL", url)
        app = StreamApp(Settings())
        assert type(app.transport) is expected, url
        assert issubclass(app.transport.Consumer, transport.Consumer)


def test_producer_flush_empties_the_send_soon_buffer() -> None:
    """Faust's buffer flush gives up after 0.1 s without a send; the transport's does not."""
    from faust.transport.drivers.aiokafka import Producer as FaustProducer

    class Buffer:
        """Sends one queued message per flush() call, as a slow sender would."""

        def __init__(self) -> None:
            self.size = 3

        async def flush(self) -> None:
            self.size = max(0, self.size - 1)

    def flushed(producer_class: type) -> int:
        producer = bare_producer(Buffer(), producer_class)
        asyncio.run(producer.flush())
        return producer.buffer.size  # type: ignore[attr-defined]

    assert flushed(FaustProducer) == 2  # gave up with messages queued
    assert flushed(transport.Producer) == 0


class EmptyBuffer:
    """A send-soon buffer whose sender task takes every message at once."""

    size = 0

    def put(self, fut: object) -> None:
        pass

    async def flush(self) -> None:
        pass


def bare_producer(buffer: object | None = None, producer_class: type = transport.Producer) -> Any:
    """A producer without a Kafka client (nothing sent yet), on ``buffer``."""
    producer = object.__new__(producer_class)
    producer.buffer = buffer or EmptyBuffer()
    producer._producer = None
    producer._transaction_producers = {}
    producer._unacknowledged = set()
    return producer


def test_producer_flush_waits_for_messages_the_sender_has_taken_but_not_sent() -> None:
    """The buffer's size is 0 once its sender task took a message; flush still waits for its ack."""

    async def scenario() -> list[str]:
        producer = bare_producer()
        sent = asyncio.get_running_loop().create_future()
        producer.send_soon(sent)
        order: list[str] = []

        async def ack_later() -> None:
            await asyncio.sleep(0.3)
            order.append("acked")
            sent.set_result(None)

        acker = asyncio.create_task(ack_later())
        await producer.flush()
        order.append("flushed")
        await acker
        return order

    assert asyncio.run(scenario()) == ["acked", "flushed"]


def test_producer_flush_fails_clearly_when_the_broker_takes_nothing() -> None:
    async def scenario() -> None:
        producer = bare_producer()
        producer.flush_timeout = 0.2
        producer.send_soon(asyncio.get_running_loop().create_future())  # never acknowledged
        await producer.flush()

    with pytest.raises(transport.ProducerFlushTimeout, match="not acknowledged by the broker within"):
        asyncio.run(scenario())
