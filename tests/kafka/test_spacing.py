"""streamapp.kafka.transport's spaced requests on the embedded broker: produce and fetch requests counted.

aiokafka lingers per partition, so records trickling into many partitions go
out one request each whatever the linger; the spaced producer sends a busy
broker at most one request per linger, and holds nothing under a light load. The requests
are counted as the producer's own client sends them (nothing stands in for
the producer or the broker).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.produce import ProduceRequest

from streamapp.embedded import tansu
from streamapp.embedded.broker import EmbeddedBroker
from streamapp.kafka import transport
from streamapp.kafka.transport import SpacedRequestsProducer, space_fetches
from tests.support import counting_requests

pytestmark = pytest.mark.integration

PARTITIONS = 8


def new_topic(broker: EmbeddedBroker) -> str:
    topic = f"spacing-{uuid.uuid4().hex[:8]}"
    broker.create_topics({topic: PARTITIONS})
    return topic


async def trickle(producer_class: type[AIOKafkaProducer], bootstrap: str, topic: str, *, linger_ms: int,
                  records: int = 96, gap: float = 0.005) -> int:
    """Produce requests for ``records`` sent ``gap`` apart, round the partitions; all acknowledged."""
    producer = producer_class(bootstrap_servers=bootstrap, linger_ms=linger_ms)
    await producer.start()
    try:
        await producer.client.force_metadata_update()
        sent = counting_requests(producer.client, ProduceRequest)
        acks = []
        for index in range(records):
            acks.append(await producer.send(topic, b"%d" % index, partition=index % PARTITIONS))
            await asyncio.sleep(gap)
        metadata = await asyncio.gather(*acks)
        assert len({(m.partition, m.offset) for m in metadata}) == records
        return len(sent)
    finally:
        await producer.stop()


def test_records_trickling_into_many_partitions_share_requests(broker: EmbeddedBroker) -> None:
    topic = new_topic(broker)
    spaced = asyncio.run(trickle(SpacedRequestsProducer, broker.bootstrap, topic, linger_ms=50))
    per_partition = asyncio.run(trickle(AIOKafkaProducer, broker.bootstrap, topic, linger_ms=50))
    unlingered = asyncio.run(trickle(SpacedRequestsProducer, broker.bootstrap, topic, linger_ms=0))
    print(f"\n96 records 5 ms apart over {PARTITIONS} partitions: produce requests spaced 50 ms {spaced}, "
          f"aiokafka's linger 50 ms {per_partition}, no linger {unlingered}")
    # ~0.5 s of sending: a few requests while the rate is learnt, then one per 50 ms
    assert spaced <= 20
    assert per_partition >= 2 * spaced
    assert unlingered >= 3 * spaced


def test_a_light_load_is_not_held(broker: EmbeddedBroker) -> None:
    """Records too sparse to share requests (under SPACED_FROM a second) go at once."""
    topic = new_topic(broker)

    async def run() -> tuple[list[float], int]:
        producer = SpacedRequestsProducer(bootstrap_servers=broker.bootstrap, linger_ms=200)
        await producer.start()
        try:
            await producer.client.force_metadata_update()
            sent = counting_requests(producer.client, ProduceRequest)
            waits = []
            for index in range(10):
                start = time.monotonic()
                await (await producer.send(topic, b"%d" % index, partition=index % PARTITIONS))
                waits.append(time.monotonic() - start)
                await asyncio.sleep(0.15)
            return waits, len(sent)
        finally:
            await producer.stop()

    waits, requests = asyncio.run(run())
    print(f"\nlinger 200 ms, a record every 150 ms: acknowledged after {max(waits) * 1000:.0f} ms at most, "
          f"{requests} requests")
    assert transport.SPACED_FROM > 1 / 0.15
    assert requests == 10
    assert max(waits) < 0.1  # none held for the 200 ms linger


# -- fetches ---------------------------------------------------------------------------


async def consume_while_produced(bootstrap: str, topic: str, *, spacing: float | None, records: int, gap: float,
                                 fetch_wait_ms: int = 5, embedded: bool = False) -> tuple[int, float, list[float], bool]:
    """Fetch requests a consumer sends while ``records`` arrive ``gap`` apart
    round the partitions, and over how many seconds; each record's delay from
    its acknowledgement to its fetch; whether the fetcher ever spaced its
    fetches. ``embedded``: the embedded broker's fetcher (it holds a spaced
    fetch itself, streamapp.embedded.tansu h.)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=fetch_wait_ms,
                                enable_auto_commit=False, auto_offset_reset="latest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await consumer.start()
    await producer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        for p in range(PARTITIONS):
            await consumer.position(TopicPartition(topic, p))
        if spacing is not None:
            space_fetches(consumer, spacing)
        if embedded:
            tansu.wait_less_when_idle(consumer)
        fetcher = consumer._fetcher
        fetches = counting_requests(consumer._client, FetchRequest)
        acknowledged: dict[bytes, float] = {}
        delays: list[float] = []
        ever_spaced = False

        async def produce() -> None:
            for index in range(records):
                await (await producer.send(topic, b"%d" % index, partition=index % PARTITIONS))
                acknowledged[b"%d" % index] = time.monotonic()
                await asyncio.sleep(gap)

        started = time.monotonic()
        sending = asyncio.create_task(produce())
        deadline = time.monotonic() + records * gap + 30
        while len(delays) < records:
            assert time.monotonic() < deadline, f"{len(delays)} of {records} records fetched"
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                now = time.monotonic()
                delays += [now - acknowledged.get(m.value, now) for m in batch]
            ever_spaced = ever_spaced or bool(getattr(fetcher, "spaced", False))
        await sending
        return len(fetches), time.monotonic() - started, delays, ever_spaced
    finally:
        await producer.stop()
        await consumer.stop()


def test_a_busy_consumer_fetches_a_spacing_apart(broker: EmbeddedBroker) -> None:
    topic = new_topic(broker)
    spaced = asyncio.run(consume_while_produced(broker.bootstrap, topic, spacing=0.05, records=300, gap=0.002))
    plain = asyncio.run(consume_while_produced(broker.bootstrap, topic, spacing=None, records=300, gap=0.002))
    (spaced_fetches, seconds, spaced_delays, was_spaced), (plain_fetches, _, _, _) = spaced, plain
    print(f"\n300 records ~2 ms apart over {PARTITIONS} partitions: fetch requests spaced 50 ms {spaced_fetches} "
          f"in {seconds:.2f} s, aiokafka's (5 ms wait) {plain_fetches}; "
          f"spaced delay max {max(spaced_delays) * 1000:.0f} ms")
    assert was_spaced
    assert spaced_fetches * 2 <= plain_fetches
    # a few while the rate is learnt (one second's window), then one per 50 ms at most
    assert spaced_fetches <= seconds / 0.05 + 15


def test_the_embedded_brokers_fetcher_spaces_a_busy_consumer_itself(broker: EmbeddedBroker) -> None:
    topic = new_topic(broker)
    spaced = asyncio.run(consume_while_produced(broker.bootstrap, topic, spacing=0.05, records=300, gap=0.002,
                                                embedded=True))
    plain = asyncio.run(consume_while_produced(broker.bootstrap, topic, spacing=None, records=300, gap=0.002))
    (spaced_fetches, seconds, spaced_delays, was_spaced), (plain_fetches, _, _, _) = spaced, plain
    print(f"\n300 records ~2 ms apart, the embedded fetcher spacing 50 ms: {spaced_fetches} fetch requests "
          f"in {seconds:.2f} s, aiokafka's (5 ms wait) {plain_fetches}; delay max {max(spaced_delays) * 1000:.0f} ms")
    assert was_spaced
    assert spaced_fetches * 2 <= plain_fetches
    assert spaced_fetches <= seconds / 0.05 + 15
    assert max(spaced_delays) < 0.5


def test_a_light_load_is_fetched_without_spacing(broker: EmbeddedBroker) -> None:
    """Records too sparse to share fetches (one per 150 ms, under SPACED_FROM a second) are not held."""
    assert transport.SPACED_FROM > 1 / 0.15
    topic = new_topic(broker)
    fetches, _, delays, was_spaced = asyncio.run(
        consume_while_produced(broker.bootstrap, topic, spacing=0.2, records=10, gap=0.15))
    print(f"\nspacing 200 ms, a record every 150 ms: fetched after {max(delays) * 1000:.0f} ms at most, "
          f"{fetches} fetch requests")
    assert not was_spaced
    assert max(delays) < 0.2  # none held for the 200 ms spacing
