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
worker, or one whose data directory was lost) restores them in bulk:
:class:`Recovery`, Faust's recovery service, first reads every assigned
active partition that is behind from its stored offset to its end with one
plain consumer, in large batches, the way Kafka Streams' restore consumer
does (:func:`restore`), and then runs Faust's own recovery, which finds the
partitions current. Faust's per-record recovery loop costs ~0.2 ms of CPU a
record; the bulk read ~7 us (docs/BENCHMARKS.md, "State"). It runs in the
recovery task, not in the rebalance callback, where aiokafka sends no
heartbeats: a restore longer than the session would cost the worker its
membership.

The store is registered as Faust's ``counting://`` store (a ``faust.stores``
entry point in setup.cfg); the recovery service through :class:`TableManager`
(the app's ``TableManager`` setting).
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
from faust.tables import TableManager as FaustTableManager
from faust.tables.recovery import Recovery as FaustRecovery
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


# -- bulk restore ---------------------------------------------------------------------


async def restore(app: Any, behind: Mapping[TP, CountingStore], generation_id: int) -> int:
    """Read each changelog partition of ``behind`` from its store's offset to
    its end into that store, in bulk; return the records read. Stops early if
    the group rebalances again (Faust's recovery then reads the rest, from the
    offsets stored so far)."""
    conf = app.conf
    consumer = AIOKafkaConsumer(
        bootstrap_servers=server_list(conf.broker, 9092),
        client_id=f"{conf.broker_client_id}-restore",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
        fetch_max_wait_ms=20,
        **credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
    )
    stores = {TopicPartition(tp.topic, tp.partition): store for tp, store in behind.items()}
    started, restored, reported = time.monotonic(), 0, 0
    log.info("restoring %s from the changelogs", sorted(f"{tp.topic}[{tp.partition}]" for tp in stores))
    await consumer.start()
    try:
        consumer.assign(list(stores))
        for tp, store in stores.items():
            stored = store.persisted_offset(TP(tp.topic, tp.partition))
            if stored is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, stored + 1)
        remaining = set(stores)
        while remaining and app.consumer_generation_id == generation_id:
            batches = await consumer.getmany(*remaining, timeout_ms=200, max_records=5000)
            for tp, records in batches.items():
                stores[tp]._write(tp.partition, [(r.key, r.value) for r in records], records[-1].offset)
                restored += len(records)
            if restored - reported >= 100_000:
                reported = restored
                log.info("restoring: %d records so far", restored)
            for tp in list(remaining):
                # the end as a fetch response reports it (right on every broker)
                end = consumer.highwater(tp)
                if end is not None and await consumer.position(tp) >= end:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    seconds = time.monotonic() - started
    log.info("restored %d records in %.1fs (%.0f/s)", restored, seconds, restored / max(seconds, 1e-6))
    return restored


class Recovery(FaustRecovery):
    """Faust's recovery service, restoring partitions that are behind in bulk first."""

    async def _build_offsets(self, consumer: Any, tps: set[TP], destination: Any, title: str) -> None:
        # Faust calls this for the actives right after it took their
        # highwaters (the last offset, -1 when empty) and before it seeks
        if title == "active":
            behind: dict[TP, CountingStore] = {}
            for tp in tps:
                store = self.tp_to_table[tp].data
                stored = store.persisted_offset(tp)
                last = self.active_highwaters.get(tp)
                if isinstance(store, CountingStore) and last is not None and last >= 0 and \
                        (stored is None or stored < last):
                    behind[tp] = store
            if behind:
                await restore(self.app, behind, self._generation_id)
                for tp, store in behind.items():
                    destination[tp] = store.persisted_offset(tp)
        await super()._build_offsets(consumer, tps, destination, title)


class TableManager(FaustTableManager):
    """Faust's table manager, with :class:`Recovery` as its recovery service."""

    @property
    def recovery(self) -> FaustRecovery:
        if self._recovery is None:
            self._recovery = Recovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
