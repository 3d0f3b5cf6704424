"""A Faust transport for the embedded Tansu broker: ``tansu://host:port``.

Reads: the Faust app's settings. Writes: nothing of its own; it is
streamapp's Kafka transport (:mod:`streamapp.kafka.transport`) with the
embedded broker's deviations from Kafka worked around. Production uses
``kafka://`` and never loads this module; the embedded stack opts in through
its broker URL. Faust finds the scheme through the ``faust.transports`` entry
point (setup.cfg: ``tansu = streamapp.embedded.tansu:TansuTransport``).

The work-arounds, measured and explained in docs/DESIGN.md ("The embedded
broker's deviations"):

a. end offsets from a Fetch's high watermark (:func:`fetch_end_offsets`):
   ListOffsets(LATEST) answers short after multi-record batches;
b. leaving the group from generation 0 too (:class:`TansuGroupCoordinator`);
c. a 2 s session, so that a JoinGroup is answered in ~1 s
   (:func:`worker_environment`; real Kafka refuses sessions under 6 s);
d. exactly-once refused with a clear error (:class:`TansuUnsupported`);
e. a short fetch wait (``TANSU_FETCH_MAX_WAIT_MS``), since the broker holds a
   fetch for its whole wait; no offset jump marked processed and no commit
   past a missing record (:class:`TansuConsumer`), since this broker neither
   compacts nor writes transaction markers;
f. (the revocation commit: fixed for every broker in
   :mod:`streamapp.kafka.transport`);
g. an idle worker's fetch wait grows (:class:`IdleFetchWait`, :class:`TansuFetcher`):
   held for its whole wait, a 20 ms fetch costs an idle worker ~70 ms and
   the broker ~185 ms of CPU a second;
h. a busy worker's fetches are spaced by the worker, not by the broker
   (:class:`TansuFetcher`): a fetch asking the broker to hold it until it
   has many bytes came back empty, fetch after fetch, while thousands of
   records waited (a backlog of 10,000 records of 1 kB: none in 3 s; under
   the bench's load the pipeline stalled for seconds to minutes).

Not worked around: a member joining while the leader leaves can leave the
group leaderless until membership changes again; restart workers one at a
time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiokafka
from aiokafka.consumer.fetcher import Fetcher as _AIOKafkaFetcher
from aiokafka.consumer.group_coordinator import GroupCoordinator as _AIOKafkaGroupCoordinator
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.group import LeaveGroupRequest
from aiokafka.structs import TopicPartition
from faust.exceptions import ImproperlyConfigured
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.enums import ProcessingGuarantee

from streamapp.kafka import transport as kafka_transport

log = logging.getLogger(__name__)

#: Environment variable setting the consumer's fetch wait (milliseconds);
#: unset, Faust's hard-coded 1,500 ms.
FETCH_WAIT_ENV = "TANSU_FETCH_MAX_WAIT_MS"

#: The embedded stack's fetch wait (see e.): each hop waits at most this long
#: for the broker's answer. Measured with ``streamapp bench`` at 20 images/s
#: through the 4 hops: p99 notification-to-counted 197 ms at 20 ms, 264 ms at
#: 50 ms, 2.6-3.1 s at Faust's 1.5 s. Idle, it costs 50 empty fetches a second.
FETCH_WAIT_MS = 20

#: When no fetch has returned records for this long (s), the fetch wait grows
#: toward :data:`FETCH_IDLE_WAIT_MS` (see g.)
FETCH_IDLE_AFTER_S = 1.0

#: The longest fetch wait of an idle worker (ms): the most the first record
#: after a quiet second waits at its first hop
FETCH_IDLE_WAIT_MS = 250

#: Fetch waits tried in turn by :func:`fetch_end_offsets` (ms)
FETCH_END_WAITS_MS = (10, 50, 200, 1000)


class TansuUnsupported(ImproperlyConfigured):
    """A Faust feature the embedded broker cannot provide."""


def worker_environment() -> dict[str, str]:
    """The environment a Faust worker needs on the embedded broker.

    - ``BROKER_SESSION_TIMEOUT=2``: the broker answers JoinGroup after half the
      session, so a 2 s session joins in ~1 s (measured time to first
      message 2.5 s, against 31.6 s with Faust's 60 s default). Real Kafka
      rejects sessions under 6 s; only the embedded stack uses this.
    - ``BROKER_HEARTBEAT_INTERVAL=0.5``: a quarter of the session, so a
      missed heartbeat or two does not expire a live member.
    - ``BROKER_COMMIT_INTERVAL=0.5``: faust-streaming forgets what it
      processed since its last commit when partitions are revoked, and the
      short session makes rebalances frequent: committing every 0.5 s
      instead of 2.8 s cut the replayed work per rebalance from ~1,000 to
      15-48 messages. (:class:`TansuConsumer` now commits on revocation, see f.;
      the interval still bounds the replay after a crash or an expired
      member.)
    - ``TANSU_FETCH_MAX_WAIT_MS=20``: the broker answers a fetch only when its
      wait is over, so this bounds what every hop adds (see e.).
    """
    return {
        "BROKER_SESSION_TIMEOUT": "2",
        "BROKER_HEARTBEAT_INTERVAL": "0.5",
        "BROKER_COMMIT_INTERVAL": "0.5",
        FETCH_WAIT_ENV: str(FETCH_WAIT_MS),
    }


# -- a. end offsets ---------------------------------------------------------------


async def fetch_end_offsets(consumer: aiokafka.AIOKafkaConsumer, partitions: Iterable[TP]) -> dict[TP, int]:
    """End offsets (offset of the next record) from Fetch high watermarks.

    ``ListOffsets(LATEST)`` can answer short of the end on this broker, but
    never past it, and never before the log start: it is a valid offset to
    fetch from, so the Fetch stays small (at most the last batch) and its
    high watermark is the true end.
    """
    tps = list(partitions)
    if not tps:
        return {}
    listed = await consumer.end_offsets(tps)
    client = consumer._client  # the consumer's own connections
    by_leader: dict[int, dict[str, list[tuple[int, int, int]]]] = defaultdict(lambda: defaultdict(list))
    for tp in tps:
        leader = client.cluster.leader_for_partition(TopicPartition(tp.topic, tp.partition))
        if leader is None or leader == -1:
            raise KafkaError(f"no leader known for {tp}")
        by_leader[leader][tp.topic].append((tp.partition, listed[tp], 1))
    ends: dict[TP, int] = {}
    for node_id, topics in by_leader.items():
        for wait_ms in FETCH_END_WAITS_MS:
            # min_bytes 0: no need to wait for data. The broker answers a
            # max_wait of 0 with no partitions at all, hence a few ms.
            request = FetchRequest(wait_ms, 0, 1, 0, list(topics.items()))
            response = await client.send(node_id, request)
            for topic, partition_data in response.topics:
                for partition, error_code, highwater, *_ in partition_data:
                    if error_code:
                        raise for_code(error_code)(f"fetching the end of {topic}[{partition}]")
                    ends[TopicPartition(topic, partition)] = highwater
            if all(TopicPartition(topic, p) in ends for topic, parts in topics.items() for p, *_ in parts):
                break
        else:
            raise KafkaError(f"the broker (node {node_id}) did not report high watermarks for {dict(topics)}")
    for tp in tps:
        if listed[tp] != ends[tp]:
            log.debug("end of %s: ListOffsets said %d, Fetch high watermark %d", tp, listed[tp], ends[tp])
    return {tp: ends[tp] for tp in tps}


# -- b. leaving the group from generation 0 -----------------------------------------


class TansuGroupCoordinator(_AIOKafkaGroupCoordinator):
    """aiokafka's coordinator, leaving the group from generation 0 as well."""

    async def _maybe_leave_group(self) -> None:
        # aiokafka leaves only when generation > 0; on this broker the first
        # generation is 0, so that member would linger until its session expired
        if self.generation == 0 and self.member_id and self._group_instance_id is None:
            try:
                await self._send_req(LeaveGroupRequest(self.group_id, self.member_id))
            except KafkaError as exc:
                log.warning("LeaveGroup from generation 0 failed: %s", exc)
            else:
                log.info("left group %s (generation 0)", self.group_id)
        await super()._maybe_leave_group()


# -- g. an idle worker polls less ------------------------------------------------------


class IdleFetchWait:
    """The fetch wait to ask for next: the busy wait while records come, growing
    (doubling per empty fetch) to ``idle_ms`` once none came for ``idle_after`` s."""

    def __init__(self, busy_ms: int, *, idle_ms: int = FETCH_IDLE_WAIT_MS, idle_after: float = FETCH_IDLE_AFTER_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.busy_ms, self.idle_ms, self.idle_after, self.clock = busy_ms, max(idle_ms, busy_ms), idle_after, clock
        self.wait_ms = busy_ms
        self.last_records = clock()

    def after_fetch(self, got_records: bool) -> int:
        now = self.clock()
        if got_records:
            self.last_records = now
            self.wait_ms = self.busy_ms
        elif now - self.last_records >= self.idle_after:
            self.wait_ms = min(self.idle_ms, self.wait_ms * 2)
        return self.wait_ms


class TansuFetcher(kafka_transport.SpacedFetcher):
    """streamapp's fetcher, asking for the wait :class:`IdleFetchWait` gives,
    and holding a fetch spaced for a load itself, before sending it (h.).

    aiokafka builds each FetchRequest from ``_fetch_max_wait_ms`` and gets
    ``True`` from ``_proc_fetch_request`` when the fetch added records
    (aiokafka/consumer/fetcher.py; tests/kafka/test_compat.py checks both);
    while that call runs, no other fetch goes to the node.
    """

    idle_wait: IdleFetchWait
    #: seconds from one spaced fetch to the next (0: not spaced)
    spacing: float = 0.0
    #: when the next fetch may be sent (time.monotonic()); past: at once
    send_at: float = 0.0

    async def _proc_fetch_request(self, assignment: Any, node_id: int, request: Any) -> bool:
        # the request asks for one byte: whatever is there comes back at once
        hold = self.send_at - time.monotonic()
        if hold > 0:
            try:
                await asyncio.sleep(hold)
            except asyncio.CancelledError:
                return False  # closed or unassigned meanwhile, as aiokafka's own call answers
        sent_at = time.monotonic()
        got_records = await super()._proc_fetch_request(assignment, node_id, request)
        wait_ms = self.idle_wait.after_fetch(bool(got_records))
        self._fetch_max_wait_ms = wait_ms
        self.send_at = sent_at + self.spacing
        return got_records

    def hold_next(self, spacing: float) -> None:
        # Tansu answers a fetch held for bytes (minimum bytes unmet) with no
        # records, again and again, while a backlog waits (h.)
        self.spacing, self.spaced = spacing, bool(spacing)


def wait_less_when_idle(consumer: aiokafka.AIOKafkaConsumer) -> None:
    """Make a started consumer's fetcher a :class:`TansuFetcher` (its loop reads
    the method and the wait afresh for every fetch); one not yet spaced for a
    load (:func:`streamapp.kafka.transport.space_fetches`) never is."""
    fetcher = getattr(consumer, "_fetcher", None)
    if isinstance(fetcher, _AIOKafkaFetcher) and not isinstance(fetcher, TansuFetcher):
        if not isinstance(fetcher, kafka_transport.SpacedFetcher):
            kafka_transport.space_fetches(consumer, 0.0)
        # never a fetch held for bytes (h.)
        fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = fetcher.unspaced
        fetcher.idle_wait = IdleFetchWait(fetcher._fetch_max_wait_ms)
        fetcher.__class__ = TansuFetcher


# -- the transport ------------------------------------------------------------------------


def _refuse_exactly_once(app: Any) -> None:
    if app.conf.processing_guarantee == ProcessingGuarantee.EXACTLY_ONCE:
        raise TansuUnsupported(
            "processing_guarantee='exactly_once' is not available on the embedded Tansu broker "
            "(tansu://): it needs Kafka transactions and idempotent producers, which this broker "
            "does not support (InitProducerId fails; read_committed consumers see aborted records). "
            "Use processing_guarantee='at_least_once' with the embedded stack, or real Kafka (kafka://)."
        )


class TansuConsumerThread(kafka_transport.ConsumerThread):
    """streamapp's aiokafka consumer thread with the Tansu work-arounds."""

    async def on_start(self) -> None:
        await super().on_start()
        consumer = self._ensure_consumer()
        coordinator = getattr(consumer, "_coordinator", None)
        if isinstance(coordinator, _AIOKafkaGroupCoordinator):
            # created inside AIOKafkaConsumer.start(): swap in the subclass
            # rather than patching aiokafka's module globals
            coordinator.__class__ = TansuGroupCoordinator
        wait_less_when_idle(consumer)

    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = os.environ.get(FETCH_WAIT_ENV)
        if wait_ms:
            # Faust passes a hard-coded 1500; the Fetcher reads this at start()
            consumer._fetch_max_wait_ms = int(wait_ms)
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        return await fetch_end_offsets(self._ensure_consumer(), partitions)


class TansuConsumer(kafka_transport.Consumer):
    """streamapp's consumer (:mod:`streamapp.kafka.transport`), running
    :class:`TansuConsumerThread`, with the Tansu work-arounds."""

    def __init__(self, transport: Any, **kwargs: Any) -> None:
        _refuse_exactly_once(transport.app)
        super().__init__(transport, **kwargs)

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return TansuConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        # Faust marks offsets it did not see as processed, for compacted topics
        # and transaction markers. Neither exists on this broker (it never
        # compacts; transactions are refused), so a jump means records were
        # dropped on the way to the agents: leave them unprocessed, so commits
        # stop short of them and the next assignment replays them.
        log.warning(
            "%s: offsets %d..%d skipped by the fetch loop; not marking them processed (committed: %r)",
            tp,
            offset_from,
            offset_to - 1,
            self._committed_offset[tp],
        )

    def _new_offset(self, tp: TP) -> int | None:
        # Faust commits past a missing record at the committed offset itself
        # (it tolerates min(acked) == committed + 1): wait for that record
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        if acked and committed is not None and min(acked) > committed:
            return None
        return super()._new_offset(tp)


class TansuProducer(kafka_transport.Producer):
    """Faust's aiokafka producer; refuses exactly-once (idempotence fails here)."""

    def __init__(self, transport: Any, **kwargs: Any) -> None:
        _refuse_exactly_once(transport.app)
        super().__init__(transport, **kwargs)


class TansuTransport(kafka_transport.Transport):
    """``tansu://``: streamapp's Kafka transport for the embedded Tansu broker."""

    Consumer = TansuConsumer
    Producer = TansuProducer
