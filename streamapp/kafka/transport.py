"""The worker's Kafka transport: Faust's aiokafka driver without its rebalance faults.

Reads and writes Kafka exactly as ``faust.transport.drivers.aiokafka`` does;
:class:`streamapp.app.StreamApp` uses it for ``kafka://`` broker URLs, and the
embedded broker's ``tansu://`` transport (:mod:`streamapp.embedded.tansu`)
builds on it. Five faults of faust-streaming 0.15.3 with aiokafka 0.14 lost
or replayed records around rebalances and stops. They were found and
measured on the embedded broker (tests/test_embedded_broker.py: two
workers, a table, 6,000 messages, 6-8 rebalances per run; and the pipeline's
two-worker test), but none depends on the broker:

1. An emptied partition filter. Faust hands aiokafka's fetch its live set of
   active partitions, and aiokafka reads an empty set as "every partition".
   Pausing the changelogs at the end of table recovery empties the set while
   a fetch waits: the fetch returned the prefetched records of the stream
   partitions, Faust dropped them as inactive, and the position stayed past
   them. :class:`ConsumerThread` passes a view that is never empty as a filter.
2. No rewind without a commit. Faust rewinds the stream partitions to their
   committed offsets after every rebalance, which brings such dropped records
   back; aiokafka's ``seek_to_committed`` skips a partition that has no commit
   yet, whose next commit then covered the records: 717 and 739 of 6,000 lost
   in 2 of 12 runs. :class:`Consumer` rewinds those to the log start (with
   ``consumer_auto_offset_reset="earliest"``, Faust's default).
3. A revocation commit with nothing to commit. Faust drops the revoked
   partitions' acked offsets before the app's revocation handler waits for
   the events in flight and commits, so every rebalance replayed what was
   processed since the last periodic commit (42-172 messages per rebalance
   with two workers; a worker's whole share with a 30 s interval).
   :class:`Consumer` drops them after the handler, and the last commit before
   a revocation or a stop waits for a periodic commit in flight instead of
   being skipped (that one's offsets predate the acks since).
4. A flush that gives up. Table updates go to the changelog through Faust's
   send-soon buffer, and the consumer flushes the producer before it commits
   the offsets of the events that made them; but the buffer's ``flush()``
   returns as soon as no message went out within 0.1 s. On a loaded machine
   a worker could then commit, stop, and never send its last table updates:
   the likely cause of a two-worker takeover test that ended with every
   image archived but fewer counted (2 of 5 full-suite runs; it did not
   recur on demand, standalone or two at a time). And the buffer's size no
   longer counts a message its sender task has taken but aiokafka has not
   batched yet. :class:`Producer` flushes until every message sent soon is
   acknowledged, within a deadline.

Also: after a rebalance Faust resumes the stream partitions, seeks them and
only then resumes flow control, which empties the agents' queues; records
fetched in between were queued and dropped. :meth:`Consumer.perform_seek`
stops the flow first.

5. Standby records dropped at the end of recovery. Faust resumes the
   standby changelog partitions, then (``Recovery.on_recovery_completed``)
   seeks the stream partitions and resumes flow control, which empties the
   changelog queue: standby records fetched in that window were dropped, and
   the fetch position stayed past them, so the standby replica missed them
   for good (and so did the active it later became, which resumes after its
   last applied offset). The same window lost GlobalTable records: the
   cause of the short counts in the operator's kill -9 runs (docs/DESIGN.md,
   "State"). :meth:`Consumer.perform_seek` seeks every standby partition
   back to just after its last applied record.
6. A standby that was once active applies its records a thousand at a time.
   Faust's recovery remembers each changelog partition's buffer size from
   the first time it sees it (``Recovery.buffer_sizes``, never cleared): a
   partition that was active keeps the recovery buffer (1,000 records), and
   when it later becomes a standby, nothing flushes that buffer between
   rebalances, so the replica trails its active by up to 999 records.
   :meth:`Consumer.on_partitions_revoked` forgets the sizes once Faust has
   flushed the buffers at a revocation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import aiokafka
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
    """Faust's aiokafka consumer thread, fetching with a filter that is never empty."""

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
