"""The worker's Kafka transport: Faust's aiokafka driver without its delivery faults.

Reads and writes Kafka exactly as ``faust.transport.drivers.aiokafka`` does;
:class:`streamapp.app.StreamApp` uses it for ``kafka://`` broker URLs, and the
embedded broker's ``tansu://`` transport (:mod:`streamapp.embedded.tansu`)
builds on it. Each fix answers a fault of faust-streaming 0.15.3 with aiokafka
0.14 that lost or replayed records; how each was found and measured is in
docs/DESIGN.md ("Faust's delivery faults"):

1. an emptied partition filter made a fetch return every partition
   (:class:`ConsumerThread` passes a filter that is never empty);
2. partitions without a commit were not rewound after a rebalance
   (:meth:`Consumer.seek_to_committed` rewinds them to the log start);
3. the revocation commit found nothing to commit, so every rebalance
   replayed (:meth:`Consumer.on_partitions_revoked` drops the bookkeeping
   after the handler; the last commit waits for one in flight);
4. the producer's flush gave up with table writes unsent
   (:meth:`Producer.flush` waits for every acknowledgement, within a
   deadline); and records fetched between a seek and the flow's resume were
   dropped (:meth:`Consumer.perform_seek` stops the flow first);
5. standby records fetched at the end of recovery were dropped for good,
   the cause of the short GlobalTable counts (:meth:`Consumer.perform_seek`
   seeks the standbys back);
6. a standby that was once active applied records 1,000 at a time
   (:meth:`Consumer.on_partitions_revoked` forgets the buffer sizes).

And two changes of cost: under load, the producer's linger spaces its
requests to a broker rather than delaying each partition's batch
(:class:`SpacedRequestsAccumulator`), and the consumer's fetches are spaced
the same way (:class:`SpacedFetcher`); and a poll's records come from the
partitions in turn (:meth:`SpacedFetcher.fetched_records`), so a backlog in
one topic does not hold back another's.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Iterator, Mapping
from typing import Any

import aiokafka
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.producer.message_accumulator import MessageAccumulator
from aiokafka.structs import TopicPartition
from faust.transport.consumer import CONSUMER_PARTITIONS_REVOKED
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.utils.tracing import traced_from_parent_span
from mode import Service

log = logging.getLogger(__name__)


class _ActivePartitions:
    """Faust's live set of active partitions, as aiokafka's fetch filter (1.).

    Follows the live set, but is never empty as a filter: aiokafka's
    ``Fetcher.fetched_records(partitions)`` returns every partition's records
    for an empty one, so an emptied set now returns nothing.
    """

    __slots__ = ("live",)

    def __init__(self, live: set[TP]) -> None:
        self.live = live

    def __bool__(self) -> bool:
        return True

    def __contains__(self, tp: object) -> bool:
        return tp in self.live

    def __iter__(self) -> Iterator[TP]:
        return iter(list(self.live))

    def __len__(self) -> int:
        return len(self.live)


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread, fetching with a filter that is never
    empty, its fetches spaced under load (:class:`SpacedFetcher`)."""

    async def on_start(self) -> None:
        await super().on_start()
        space_fetches(self._ensure_consumer(), self.app.conf.producer_linger or 0.0)

    async def _fetch_records(
        self,
        consumer: aiokafka.AIOKafkaConsumer,
        active_partitions: set[TP],
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        # the main thread keeps changing the set while the fetch waits (1.)
        return await super()._fetch_records(consumer, _ActivePartitions(active_partitions), timeout, max_records)


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, running :class:`ConsumerThread`, that neither
    loses nor replays records at a rebalance (see the module docstring)."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @Service.transitions_to(CONSUMER_PARTITIONS_REVOKED)
    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        # Faust's version, with the revoked partitions' bookkeeping dropped
        # after the app's handler (which waits for the events in flight and
        # commits them) instead of before it (3.)
        span = self.app._start_span_from_rebalancing("on_partitions_revoked")
        trace = traced_from_parent_span(span)
        with span:
            if self._active_partitions is not None:
                self._active_partitions.difference_update(revoked)
            self._paused_partitions.difference_update(revoked)
            try:
                await trace(self._on_partitions_revoked, partitions=revoked)(revoked)
                # the handler flushed the recovery buffers: let each partition
                # take the buffer of its next role, active or standby (6.)
                self.app.tables.recovery.buffer_sizes.clear()
            finally:
                for tp in revoked:
                    self._gap.pop(tp, None)
                    self._acked.pop(tp, None)
                    self._acked_index.pop(tp, None)
                    self._read_offset.pop(tp, None)
                    self._committed_offset.pop(tp, None)

    async def commit_and_end_transactions(self) -> None:
        # The last commit before a stop or a revocation. Faust's commit()
        # returns without committing while another commit is in flight, whose
        # offsets were taken when it started: wait for it, then commit (3.)
        while self._commit_fut is not None:
            await self.maybe_wait_for_commit_to_finish()
        await super().commit_and_end_transactions()

    async def perform_seek(self) -> None:
        # Records fetched between Faust's seek and its resume_flow() (which
        # empties the agents' queues) were dropped: stop the flow before the
        # seek, so they stay in the broker. resume_flow() follows every seek.
        if self.flow_active:
            self.stop_flow()
        await super().perform_seek()
        # Records fetched for standbys are dropped from here until the flow
        # resumes (5.): read them again, from after the last one taken.
        recovery = self.app.tables.recovery
        for tp in recovery.standby_tps:
            taken = recovery.standby_offsets.get(tp)
            await self.seek(tp, 0 if taken is None or taken < 0 else taken + 1)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        # aiokafka seeks only partitions with a committed offset > 0 (2.);
        # changelogs are positioned by table recovery
        uncommitted = [tp for tp, offset in committed.items() if not offset and not self._is_changelog_tp(tp)]
        if uncommitted and self.app.conf.consumer_auto_offset_reset == "earliest":
            log.debug("no committed offset for %s: rewinding to the log start", uncommitted)
            # ListOffsets(EARLIEST), as for a fresh assignment
            await self._thread.seek_to_beginning(*uncommitted)
        return committed


class RecentRate:
    """Records counted over the last ``window`` seconds, as a rate; the
    spacing rule (:func:`spacing_for`) reads the last second."""

    def __init__(self, window: float = 1.0) -> None:
        self.window = window
        self._seen: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, now: float, records: int) -> None:
        self._seen.append((now, records))

    def per_second(self, now: float, shortest: float) -> float:
        """Records a second since the first count in the window (over at least
        ``shortest`` seconds). Each count holds the records that came since the
        one before, so the first count's are not of that span: with them, a
        light load spaced a long way apart would count itself busy."""
        seen = self._seen
        while seen and seen[0][0] < now - self.window:
            seen.popleft()
        if len(seen) < 2 or shortest <= 0:
            return 0.0
        return (sum(count for _, count in seen) - seen[0][1]) / max(now - seen[0][0], shortest)


#: records a second from which spacing a consumer's or producer's requests
#: pays (fewer would mostly go one to a request anyway): well above one
#: worker's 60 at 20 images/s, whatever the linger
SPACED_FROM = 100.0
#: records a spaced request is meant to carry: the spacing grows past the
#: linger (up to :data:`LONGEST_SPACING` lingers) while fewer records come
RECORDS_PER_REQUEST = 8
LONGEST_SPACING = 4


def spacing_for(rate: float, linger: float) -> float:
    """Seconds between requests for records coming at ``rate`` a second: none
    (0) under :data:`SPACED_FROM`; else the time :data:`RECORDS_PER_REQUEST`
    records take, within 1 and :data:`LONGEST_SPACING` lingers."""
    if linger <= 0 or rate < SPACED_FROM:
        return 0.0
    return min(max(linger, RECORDS_PER_REQUEST / rate), LONGEST_SPACING * linger)


class SpacedRequestsAccumulator(MessageAccumulator):
    """aiokafka's accumulator, spacing a busy broker's produce requests.

    aiokafka lingers per partition: records spread over many partitions go
    out one request each whatever ``linger_ms``, and every request is a
    socket write and a wake-up of the broker. Here the linger spaces a
    broker's requests instead, and only while its records come fast enough
    to share them (:func:`spacing_for`, over the last second): then a batch
    goes out at once if the broker's last request was a spacing ago, and
    otherwise with everything else for that broker when that spacing is
    over. A light load waits for nothing.
    """

    #: broker id -> when its last produce request was sent (time.monotonic())
    _sent_at: dict[int, float]
    #: broker id -> the records of its recent requests
    _drained: dict[int, RecentRate]

    def drain_by_nodes(self, ignore_nodes: Any, muted_partitions: Any = frozenset()) -> Any:
        now = time.monotonic()
        spacings: dict[int, float] = {}
        for tp, batches in self._batches.items():
            leader = self._cluster.leader_for_partition(tp)
            if batches and leader is not None and leader != -1:
                if leader not in spacings:
                    spacings[leader] = self.spacing(leader, now)
                # the head batch is due once its broker's spacing is over (at once if not busy)
                due = self._sent_at.get(leader, -math.inf) + spacings[leader] if spacings[leader] else -math.inf
                batches[0]._linger_time = max(0.0, due - batches[0]._ctime)
        nodes, unknown_leaders_exist = super().drain_by_nodes(ignore_nodes, muted_partitions)
        for leader, batches in nodes.items():
            self._sent_at[leader] = now
            self._drained.setdefault(leader, RecentRate()).add(
                now, sum(batch.record_count for batch in batches.values()))
        return nodes, unknown_leaders_exist

    def spacing(self, leader: int, now: float) -> float:
        """Seconds between ``leader``'s requests at the rate its records come (0: none)."""
        drained = self._drained.get(leader)
        linger = self._linger_time
        return spacing_for(drained.per_second(now, linger), linger) if drained is not None else 0.0


class SpacedRequestsProducer(aiokafka.AIOKafkaProducer):
    """aiokafka's producer with :class:`SpacedRequestsAccumulator`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # aiokafka builds its accumulator in __init__ and takes no class for it
        accumulator = self._message_accumulator
        accumulator.__class__ = SpacedRequestsAccumulator
        accumulator._sent_at, accumulator._drained = {}, {}


def available_records(assignment: Any, request: Any) -> int:
    """Records the fetch ``request`` could get: each partition's high watermark
    (as its answer left it) past the offset asked for."""
    if not assignment.active:
        return 0
    total = 0
    for topic, partitions in request.topics:
        for partition, offset, _max_bytes in partitions:
            tp = TopicPartition(topic, partition)
            if tp in assignment.tps:
                highwater = assignment.state_value(tp).highwater
                if highwater is not None and highwater > offset:
                    total += highwater - offset
    return total


class SpacedFetcher(Fetcher):
    """aiokafka's fetcher, spacing a busy consumer's fetches.

    aiokafka fetches again as soon as the last fetch's records are taken: a
    worker sharing the load with another fetched 2-3 records a time, ~55
    fetches a second each (docs/BENCHMARKS.md). While records come fast
    enough to share fetches (:func:`spacing_for`, over the last second), each
    fetch asks the broker to hold it for the spacing (minimum bytes: the
    response's maximum); a light load fetches as configured. And it hands
    out a poll's records from the partitions in turn.
    """

    #: the linger the spacing starts from (seconds)
    linger: float
    #: the fetch's (min bytes, max wait ms) when not spaced
    unspaced: tuple[int, int]
    spaced: bool
    recent: RecentRate

    async def _proc_fetch_request(self, assignment: Any, node_id: int, request: Any) -> bool:
        got_records = await super()._proc_fetch_request(assignment, node_id, request)
        now = time.monotonic()
        self.recent.add(now, available_records(assignment, request))
        self.hold_next(spacing_for(self.recent.per_second(now, self.linger), self.linger))
        return got_records

    async def fetched_records(self, partitions: Any, timeout: float = 0, max_records: int | None = None) -> Any:
        """aiokafka's, with the partitions in turn: a poll of ``max_records``
        (``broker_max_poll_records``) drains them in the order their fetches
        came back, and one drained in part kept its place, so a burst of
        events held back the tensors and labeled records fetched after it,
        and the stages took turns (docs/BENCHMARKS.md). It goes behind the
        others now."""
        drained = await super().fetched_records(partitions, timeout, max_records)
        pending = self._records
        for tp in drained:
            if tp in pending:
                pending[tp] = pending.pop(tp)
        return drained

    def hold_next(self, spacing: float) -> None:
        """Have the next fetch held ``spacing`` seconds (0: as configured): by
        the broker, which answers once it has the minimum bytes or the wait is
        over (the embedded broker's fetcher holds it itself instead)."""
        if spacing:
            self._fetch_min_bytes, self._fetch_max_wait_ms = self._fetch_max_bytes, round(spacing * 1000)
        elif self.spaced:
            self._fetch_min_bytes, self._fetch_max_wait_ms = self.unspaced
        self.spaced = bool(spacing)


def space_fetches(consumer: aiokafka.AIOKafkaConsumer, linger: float) -> None:
    """Make a started consumer's fetcher a :class:`SpacedFetcher` (aiokafka
    reads the fetcher's minimum bytes and wait afresh for every fetch)."""
    fetcher = getattr(consumer, "_fetcher", None)
    if isinstance(fetcher, Fetcher) and not isinstance(fetcher, SpacedFetcher):
        fetcher.__class__ = SpacedFetcher
        fetcher.linger = linger
        fetcher.unspaced = (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms)
        fetcher.spaced = False
        fetcher.recent = RecentRate()


class ProducerFlushTimeout(RuntimeError):
    """The broker did not acknowledge the worker's pending writes in time."""


class Producer(faust_aiokafka.Producer):
    """Faust's aiokafka producer whose ``flush()`` returns only once everything
    sent soon (table changelog writes) is acknowledged (4.), or raises
    :class:`ProducerFlushTimeout` after :attr:`flush_timeout` seconds."""

    #: a broker that takes no writes for this long fails the flush (and the
    #: commit waiting for it) with a clear error instead of hanging it
    flush_timeout: float = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unacknowledged: set[asyncio.Future] = set()

    @property
    def _producer_type(self) -> type[aiokafka.AIOKafkaProducer]:
        return SpacedRequestsProducer

    def send_soon(self, fut: Any) -> None:
        # counted from the hand-over: the buffer's size no longer counts a
        # message once its sender task has taken it (4.)
        self._unacknowledged.add(fut)
        fut.add_done_callback(self._unacknowledged.discard)
        super().send_soon(fut)

    async def flush(self) -> None:
        # Faust's ProducerBuffer.flush() returns as soon as no message went out
        # within 0.1 s, with table changelog writes still queued; the consumer
        # then commits the offsets whose updates they are
        deadline = time.monotonic() + self.flush_timeout
        while self.buffer.size or self._unacknowledged:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProducerFlushTimeout(
                    f"{self.buffer.size + len(self._unacknowledged)} messages (table changelog writes) not "
                    f"acknowledged by the broker within {self.flush_timeout:.0f}s; offsets are not committed"
                )
            if self.buffer.size:
                await self.buffer.flush()
            elif self._unacknowledged:
                await asyncio.wait(list(self._unacknowledged), timeout=min(left, 1.0))
        await super().flush()


class Transport(faust_aiokafka.Transport):
    """``kafka://`` for streamapp's workers: Faust's aiokafka transport with
    :class:`Consumer` and :class:`Producer`."""

    Consumer = Consumer
    Producer = Producer
