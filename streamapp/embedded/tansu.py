"""A Faust transport for the embedded Tansu broker: ``tansu://host:port``.

Reads: the Faust app's settings. Writes: nothing of its own; it is Faust's
aiokafka driver (``faust.transport.drivers.aiokafka``) with the embedded
broker's deviations from Kafka worked around (measured in
/work/shared/BROKER.md). Production uses ``kafka://`` and never loads this
module; the embedded stack opts in through its broker URL. Faust finds the
scheme through the ``faust.transports`` entry point:

    [options.entry_points]
    faust.transports =
        tansu = streamapp.embedded.tansu:TansuTransport

The work-arounds, each confined to this transport:

a. End offsets. ``ListOffsets(LATEST)`` answers (first offset of the last
   record batch) + 1 when that batch holds more than one record: after a
   10-record batch, 2 instead of 11. Faust recovers tables up to these end
   offsets, so a restarted worker silently lost table updates (memory store:
   4,977-4,980 of 5,000 recovered) or refused to start (RocksDB: "persisted
   offset higher than highwater"). A Fetch response's high watermark is
   right, so :func:`fetch_end_offsets` takes end offsets from a Fetch.
b. Group generation 0. The broker numbers the first generation 0 where Kafka
   starts at 1, and aiokafka sends LeaveGroup only for generation > 0: a
   gracefully stopped first worker stayed in the group until its session
   expired, and its successor waited 12.5-14 s instead of ~3 s.
   :class:`TansuGroupCoordinator` leaves the group from generation 0 too.
c. Join delay. The broker answers a JoinGroup only after half the session
   timeout (Faust's 60 s default: ~30 s to the first message).
   :func:`worker_environment` gives workers a 2 s session, which real Kafka
   would reject (its minimum is 6 s): that is why it is not the default.
d. Transactions. InitProducerId fails (aiokafka speaks v0, the broker needs
   v3 fields) and read_committed consumers saw aborted records, so
   ``processing_guarantee="exactly_once"`` is refused with
   :class:`TansuUnsupported` when the worker creates its consumer or producer.
e. Fetch wait. The broker holds a fetch for its full wait even when data
   arrives, so every hop costs up to the consumer's fetch wait (1.5 s,
   hard-coded in Faust's driver); ``TANSU_FETCH_MAX_WAIT_MS`` sets it. A
   100 ms wait was measured losing 120-209 messages at a rebalance with two
   workers. One cause is Faust's own and is fixed here: after a rebalance,
   table recovery leaves the fetch loop running while Faust resumes the
   stream partitions, seeks them to the committed offset (rewinding its read
   offset) and then resumes flow control, which empties the agents' queues.
   Records fetched in that window were queued and then dropped; the next
   record looked like a jump, which Faust marks processed (``_add_gap``,
   meant for compacted topics), and a commit covered the dropped records.
   A short wait lands a fetch in that window often, 1.5 s rarely; real Kafka
   answers a fetch as soon as data arrives, so the race is not Tansu's.
   :class:`TansuConsumer` stops the flow before that seek, never marks a jump
   processed (this broker neither compacts nor writes transaction markers)
   and never commits past a missing record at the committed offset (Faust
   tolerates one). Measured at 100 ms with two workers, a table and
   graceful restarts (tests/test_embedded_broker.py, no-loss test): Faust
   unpatched marked 4-13 jumps processed per run; with only the jump marking
   off, 3 records were lost, each the record at a committed offset; with all
   three fixes no jump was seen. The loss left after those (about 1 run in
   3 of that test, at 100 ms and 1.5 s alike: the first records of two
   partitions, taken right as the input starts by the restarted first
   worker before anybody had committed them, never reached the output:
   717 and 739 of 6,000 messages in 2 of 12 instrumented runs) had two more
   causes, both Faust's with aiokafka, and both fixed here. Seen in a
   failing run, the restarted worker joining with partitions 0 and 1:
   - Faust pauses stream partitions only in its own set of active
     partitions, so aiokafka keeps prefetching them, and it hands that live
     set to aiokafka's ``fetched_records``, which reads an empty set as
     "every partition". Pausing the changelogs at the end of table recovery
     emptied the set while a fetch waited: it returned partitions 0 and 1
     whole (offsets 0-348 and 0-407, 757 records), Faust dropped them as
     inactive, and the consumer's position stayed past them.
     :class:`TansuConsumerThread` passes a view of the live set that is never
     empty as a filter, so an emptied set returns nothing.
   - Faust's rewind after every rebalance (``perform_seek``) relies on
     aiokafka's ``seek_to_committed``, which skips a partition without a
     committed offset. Partitions with a commit were rewound, so passing
     runs showed the same drops without loss (370 records taken with the
     set empty, rewound to 18; 605 taken as the flow stopped before a seek,
     rewound to 251). These were not: the worker relayed from 349 and 408
     and committed past the dropped records (an earlier owner had relayed
     0-17 of partition 1 without committing): 739 lost. :class:`TansuConsumer`
     seeks stream partitions with no commit to the log start after
     ``seek_to_committed``.
   Real Kafka would hit both: the records were prefetched before the seek,
   so the broker's fetch wait does not matter. These fixes, the stopped flow
   before the seek and f. below are therefore in :mod:`streamapp.kafka.transport`,
   which ``kafka://`` workers use too; this transport builds on it, adding
   what is this broker's own (end offsets, leaving from generation 0, no
   jump marking, no commit past a missing record, exactly-once refused).
   After the fixes, no loss in 10 runs at 1.5 s and 3 at
   100 ms (131-1,405 duplicates per run, at-least-once replays; 201-1,131
   before), 8 at 20 ms (44-587). So the embedded stack's workers now fetch
   with a 20 ms wait (:data:`FETCH_WAIT_MS`).
f. Commit on revocation. faust-streaming's ``Consumer.on_partitions_revoked``
   drops the revoked partitions' bookkeeping (acked and committed offsets)
   and only then runs the app's handler, which stops the flow, waits for the
   events in flight and commits (``wait_empty``): that commit finds nothing
   for them, so what was processed since the last periodic commit is
   replayed by the partitions' next owner, often the same worker (the
   assignment is eager: every rebalance revokes everything). This is
   Faust's and transport-independent (the early drop came with
   faust-streaming PR #95; issue #502 reports duplicates after rebalances
   on real Kafka that fit it), so the fix is in :mod:`streamapp.kafka.transport`
   for ``kafka://`` workers as well. A graceful stop is not affected: it
   commits through ``App._stop_consumer`` and ``Consumer.on_stop``, both
   before the LeaveGroup, and the stopped worker's partitions were
   committed to their end in all 30 instrumented two-worker runs (7 of them
   with a 30 s commit interval, so that only the stop could commit). The
   replays blamed on it were the survivor's: stopping one of two workers
   right after 400 messages were processed, the survivor's own partitions
   were replayed in 4 of 4 runs (42-172 messages), in 1 of 6 when stopping
   once the global table had caught up as
   ``test_two_workers_share_partitions_and_see_every_key`` does (154; its
   one failure, 470 counted of 440, fits this, though Faust logs commits
   only at debug level, so its logs cannot tell), and the survivor's whole
   share (190, 210) with a 30 s commit interval. :class:`TansuConsumer` drops
   that bookkeeping after the handler instead, so the handler's commit
   covers everything processed; the broker accepts that commit mid-
   rebalance. After it: no replay in 4 + 6 + 3 such runs; the no-loss test
   (8 rebalances) counted 0 duplicates in 3 runs, 118 with the fix turned
   off (44-587 in e.); tests/test_embedded_broker.py checks it with
   periodic commits off.
   One more gap, read in the code and not seen to lose anything: that last
   commit (at stop and at revocation alike) is skipped when a periodic
   commit is in flight, whose offsets predate the acks since (in-flight
   commits took up to 0.37 s here, flushing the changelog producer).
   :class:`TansuConsumer` waits for it and then commits.

Not worked around (seen twice): when a member joins while the leader is
leaving (its JoinGroup, then the leader's LeaveGroup), the broker keeps the
departed member as the new generation's leader. The others re-join that
same generation every ~3 s, none is leader, nothing is assigned, until the
membership changes again. Restart workers one at a time, each after the
group has settled. (A fix would be a coordinator that re-joins as a new
member when a generation repeats without a leader; not written yet.)
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import aiokafka
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
