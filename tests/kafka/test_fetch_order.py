"""streamapp.kafka.transport's fetcher on the embedded broker: a backlog in one topic does not hold back another's records.

A worker reads all its topics with one consumer. Under a burst of
notifications, aiokafka handed each poll's records out partition by
partition in the order their fetches came back, and a partition drained in
part stayed first: the tensors and labeled records produced meanwhile waited
behind the whole backlog of events, and the stages took turns instead of
running together (docs/BENCHMARKS.md). The worker polls at most
``broker_max_poll_records`` at a time, and a partition drained in part goes
behind the others.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamapp.embedded.broker import EmbeddedBroker
from streamapp.kafka.transport import space_fetches

pytestmark = pytest.mark.integration

PARTITIONS = 8
BACKLOG = 4000
LATER = 40
POLL = 32


async def backlog_then_later_records(bootstrap: str, backlog_topic: str, later_topic: str, *, rotate: bool) -> int:
    """Records of the backlog handed out before the last of ``LATER`` records
    produced to another topic once the backlog was fetched, polling ``POLL`` at a time."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20,
                                max_poll_records=POLL)
    await producer.start()
    await consumer.start()
    try:
        consumer.assign([TopicPartition(t, p) for t in (backlog_topic, later_topic) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        if rotate:
            space_fetches(consumer, 0.0)
        for index in range(BACKLOG):
            await producer.send(backlog_topic, b"%d" % index, partition=index % PARTITIONS)
        await producer.flush()
        # the first poll: the backlog is fetched, and handed out from here on
        first = await consumer.getmany(timeout_ms=5000)
        backlog_seen = sum(len(records) for records in first.values())
        assert backlog_seen, "the backlog was not fetched"
        for index in range(LATER):
            await producer.send(later_topic, b"%d" % index, partition=index % PARTITIONS)
        await producer.flush()
        later_seen = 0
        while later_seen < LATER:
            assert backlog_seen <= BACKLOG, "records came twice"
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                if tp.topic == later_topic:
                    later_seen += len(records)
                else:
                    backlog_seen += len(records)
            await asyncio.sleep(0.01)  # a worker's agents take their time with a poll's records
        return backlog_seen
    finally:
        await consumer.stop()
        await producer.stop()


def test_records_of_another_topic_are_not_held_behind_a_backlog(broker: EmbeddedBroker) -> None:
    def run(rotate: bool) -> int:
        backlog_topic, later_topic = f"backlog-{uuid.uuid4().hex[:8]}", f"later-{uuid.uuid4().hex[:8]}"
        broker.create_topics({backlog_topic: PARTITIONS, later_topic: PARTITIONS})
        return asyncio.run(backlog_then_later_records(broker.bootstrap, later_topic=later_topic,
                                                      backlog_topic=backlog_topic, rotate=rotate))

    rotated, plain = run(rotate=True), run(rotate=False)
    print(f"\n{BACKLOG} records waiting in {PARTITIONS} partitions, then {LATER} in another topic, {POLL} a poll: "
          f"handed out before the last of those {LATER}: {rotated} of the backlog (streamapp's fetcher), "
          f"{plain} (aiokafka's)")
    # aiokafka's drains the whole backlog first; streamapp's takes turns, a poll
    # from each partition in line
    assert plain == BACKLOG
    assert rotated <= BACKLOG // 2
