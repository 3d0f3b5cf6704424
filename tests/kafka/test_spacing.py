"""streamapp.kafka.transport.SpacedRequestsProducer on the embedded broker: produce requests counted.

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
from aiokafka import AIOKafkaProducer
from aiokafka.protocol.produce import ProduceRequest

from streamapp.embedded.broker import EmbeddedBroker
from streamapp.kafka.transport import SpacedRequestsProducer

pytestmark = pytest.mark.integration

PARTITIONS = 8


def new_topic(broker: EmbeddedBroker) -> str:
    topic = f"spacing-{uuid.uuid4().hex[:8]}"
    broker.create_topics({topic: PARTITIONS})
    return topic


def counting_requests(producer: AIOKafkaProducer) -> list[float]:
    """When each produce request left: the producer's client send, watched."""
    sent: list[float] = []
    send = producer.client.send

    async def watched(node_id: int, request: object, **kwargs: object) -> object:
        if isinstance(request, ProduceRequest):
            sent.append(time.monotonic())
        return await send(node_id, request, **kwargs)

    producer.client.send = watched  # type: ignore[method-assign]
    return sent


async def trickle(producer_class: type[AIOKafkaProducer], bootstrap: str, topic: str, *, linger_ms: int,
                  records: int = 96, gap: float = 0.005) -> int:
    """Produce requests for ``records`` sent ``gap`` apart, round the partitions; all acknowledged."""
    producer = producer_class(bootstrap_servers=bootstrap, linger_ms=linger_ms)
    await producer.start()
    try:
        await producer.client.force_metadata_update()
        sent = counting_requests(producer)
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
    """Records too sparse to share requests (2 per linger, under WORTH_SPACING) go at once."""
    topic = new_topic(broker)

    async def run() -> tuple[list[float], int]:
        producer = SpacedRequestsProducer(bootstrap_servers=broker.bootstrap, linger_ms=200)
        await producer.start()
        try:
            await producer.client.force_metadata_update()
            sent = counting_requests(producer)
            waits = []
            for index in range(10):
                start = time.monotonic()
                await (await producer.send(topic, b"%d" % index, partition=index % PARTITIONS))
                waits.append(time.monotonic() - start)
                await asyncio.sleep(0.1)
            return waits, len(sent)
        finally:
            await producer.stop()

    waits, requests = asyncio.run(run())
    print(f"\nlinger 200 ms, a record every 100 ms: acknowledged after {max(waits) * 1000:.0f} ms at most, "
          f"{requests} requests")
    assert requests == 10
    assert max(waits) < 0.1  # none held for the 200 ms linger
