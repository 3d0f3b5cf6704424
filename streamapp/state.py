"""Table state on disk: per-key entries with per-partition counts kept beside them.

Reads: table writes (the tally agents) and changelog records (recovery and
standby replicas). Writes: one RocksDB database per table partition, under the
worker's data directory (``APP_DATADIR``).

:class:`CountingStore` is Faust's RocksDB store (through ``rocksdict``) that
also keeps, in each partition's database, how many keys hold each value: for
``images`` (image identity -> digit) the digit counts of that partition, for
``dead-letters`` (failed input -> kind) the counts per kind. An entry and the
counts change in one atomic write batch, so a kill -9 can never leave one
without the other, and a worker finds its counts at start-up without scanning:
reading a partition's counts costs O(distinct values). How the counts of all
partitions are combined for the cluster is in :mod:`streamapp.totals`; why the
state is shaped this way is in docs/DESIGN.md ("State").

A worker that is assigned partitions it holds little or nothing of (a new
worker, or one whose data directory was lost) restores them in bulk before
Faust's own recovery starts: :meth:`CountingStore.on_rebalance` reads each
assigned active partition's changelog from the stored offset to its end with
a plain consumer, in large batches, the way Kafka Streams' restore consumer
does; Faust's recovery then finds the partitions current and reads only
what arrives meanwhile. Faust's recovery loop costs ~0.2-0.3 ms per record
(docs/BENCHMARKS.md, "State"); the bulk read is several times faster.

The store is registered as Faust's ``counting://`` store (a ``faust.stores``
entry point in setup.cfg).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import rocksdict
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.stores import rocksdb
from faust.streams import current_event
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth, server_list
from faust.types import TP, EventT

log = logging.getLogger(__name__)

#: where a partition's counts live in its database; table keys are serialized
#: JSON or raw text, which never start with a NUL byte
COUNTS_KEY = b"\0streamapp.counts"

#: RocksDB sizes per partition database. Faust's defaults (64 MB memtables,
#: a 2 GB block cache each) let a worker's memory grow with the state; these
#: keep it flat (docs/BENCHMARKS.md, "State").
STORE_OPTIONS: Mapping[str, Any] = {
    "write_buffer_size": 2 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * 1024 * 1024,
    "block_cache_size": 2 * 1024 * 1024,
}


# -- pure: the counts and their encoding --------------------------------------------


def decode_counts(raw: bytes | None) -> Counter[bytes]:
    """A partition's stored counts: serialized value -> number of keys holding it."""
    if not raw:
        return Counter()
    return Counter({value.encode("utf-8"): n for value, n in json.loads(raw).items()})


def encode_counts(counts: Mapping[bytes, int]) -> bytes:
    # values are serialized table values (JSON text): valid UTF-8
    return json.dumps({value.decode("utf-8"): n for value, n in sorted(counts.items()) if n}).encode()


def apply_change(counts: Counter[bytes], old: bytes | None, new: bytes | None) -> None:
    """Update ``counts`` for one key going from ``old`` to ``new`` (None: absent)."""
    if old == new:
        return
    if old is not None:
        counts[old] -= 1
        if counts[old] <= 0:
            del counts[old]
    if new is not None:
        counts[new] += 1


# -- the store ----------------------------------------------------------------------


class CountingStore(rocksdb.Store):
    """Faust's RocksDB store, keeping per-partition value counts atomically with the entries."""

    def __init__(self, url: Any, app: Any, table: Any, *, options: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(url, app, table, options={**STORE_OPTIONS, **(options or {}), "driver": "rocksdict"},
                         **kwargs)
        # partition -> counts as stored; loaded when first read, dropped on revoke
        self._counts: dict[int, Counter[bytes]] = {}

    def partition_counts(self, partition: int) -> Mapping[bytes, int]:
        """Serialized value -> how many keys of ``partition`` hold it."""
        counts = self._counts.get(partition)
        if counts is None:
            counts = self._counts[partition] = decode_counts(self._db_for_partition(partition).get(COUNTS_KEY))
        return counts

    def _write(self, partition: int, changes: Iterable[tuple[bytes, bytes | None]], offset: int | None = None) -> None:
        """Apply (key, value or None to delete) changes, their counts and the
        changelog ``offset`` they bring the partition to, in one write batch."""
        db = self._db_for_partition(partition)
        counts = Counter(self.partition_counts(partition))
        batch = rocksdict.WriteBatch(raw_mode=True)
        latest: dict[bytes, bytes | None] = {}
        changed = False
        for key, value in changes:
            old = latest[key] if key in latest else db.get(key)
            latest[key] = value
            if old == value:
                continue
            apply_change(counts, old, value)
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
            changed = True
        if changed:
            batch.put(COUNTS_KEY, encode_counts(counts))
        if offset is not None:
            batch.put(self.offset_key, str(offset).encode())
        if changed or offset is not None:
            db.write(batch)
        self._counts[partition] = counts

    # -- Faust's store interface -------------------------------------------------

    def _set(self, key: bytes, value: bytes | None) -> None:
        self._write(_event_partition(), [(key, value)])

    def _del(self, key: bytes) -> None:
        self._write(_event_partition(), [(key, None)])

    def apply_changelog_batch(self, batch: Iterable[EventT], to_key: Callable[[Any], Any],
                              to_value: Callable[[Any], Any]) -> None:
        # Faust's version writes the entries, then the offset, in separate
        # writes; here entries, counts and offset go in one batch per partition
        by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
        offsets: dict[int, int] = {}
        for event in batch:
            message = event.message
            by_partition.setdefault(message.partition, []).append((message.key, message.value))
            offsets[message.partition] = max(message.offset, offsets.get(message.partition, -1))
        for partition, changes in by_partition.items():
            self._write(partition, changes, offsets[partition])

    async def on_rebalance(self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP],
                           generation_id: int = 0) -> None:
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        topics = self.table.changelog_topic.topics
        actives = sorted(tp for tp in self.app.assignor.assigned_actives() if tp.topic in topics)
        if actives:
            await self.restore(actives, generation_id)

    async def restore(self, tps: list[TP], generation_id: int) -> None:
        """Read the changelog of ``tps`` from each one's stored offset to its end,
        in bulk; stop early if the group rebalances again (Faust's recovery
        then reads the rest, from the offsets stored so far)."""
        conf = self.app.conf
        consumer = AIOKafkaConsumer(
            bootstrap_servers=server_list(conf.broker, 9092),
            client_id=f"{conf.broker_client_id}-restore",
            enable_auto_commit=False,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            fetch_max_wait_ms=20,
            **credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
        )
        started, restored, reported = time.monotonic(), 0, 0
        log.info("restoring %s partitions %s from the changelog", self.table.name, [tp.partition for tp in tps])
        await consumer.start()
        try:
            partitions = [TopicPartition(tp.topic, tp.partition) for tp in tps]
            consumer.assign(partitions)
            for tp in partitions:
                stored = self.persisted_offset(TP(tp.topic, tp.partition))
                if stored is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, stored + 1)
            remaining = set(partitions)
            while remaining and self.app.consumer_generation_id == generation_id:
                batches = await consumer.getmany(*remaining, timeout_ms=200, max_records=5000)
                for tp, records in batches.items():
                    self._write(tp.partition, [(r.key, r.value) for r in records], records[-1].offset)
                    restored += len(records)
                if restored - reported >= 100_000:
                    reported = restored
                    log.info("restoring %s: %d records so far", self.table.name, restored)
                for tp in list(remaining):
                    # the end as a fetch response reports it (right on every broker)
                    end = consumer.highwater(tp)
                    if end is not None and await consumer.position(tp) >= end:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        if restored:
            seconds = time.monotonic() - started
            log.info("restored %d records of %s in %.1fs (%.0f/s)", restored, self.table.name, seconds,
                     restored / max(seconds, 1e-6))

    def revoke_partitions(self, table: Any, tps: set[TP]) -> None:
        super().revoke_partitions(table, tps)
        for tp in tps:
            if tp.topic in table.changelog_topic.topics:
                self._counts.pop(tp.partition, None)

    def reset_state(self) -> None:
        super().reset_state()
        self._counts.clear()

    def _visible_keys(self, db: Any) -> Iterator[bytes]:
        return (key for key in super()._visible_keys(db) if key != COUNTS_KEY)

    def _visible_items(self, db: Any) -> Iterator[tuple[bytes, bytes]]:
        return ((key, value) for key, value in super()._visible_items(db) if key != COUNTS_KEY)


def _event_partition() -> int:
    event = current_event()
    if event is None:
        raise RuntimeError("a counting table is written from an agent, while it processes an event")
    return event.message.partition
