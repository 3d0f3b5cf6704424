"""The tables' store: Faust's RocksDB store keeping per-partition value counts.

Reads: table writes (the tally agents) and changelog records (recovery and
standby replicas). Writes: one RocksDB database per table partition, under the
worker's data directory (``APP_DATADIR``), through ``rocksdict``.

An entry and its partition's counts (:mod:`streamapp.pipeline.state`) change in one
atomic write batch, so a kill -9 can never leave one without the other, and a
worker finds its counts at start-up without scanning: reading a partition's
counts costs O(distinct values). Registered as Faust's ``counting://`` store (a
``faust.stores`` entry point in setup.cfg). It overrides the store's
documented extension points (``_set``, ``_del``, ``apply_changelog_batch``)
and reads its partition databases (``_db_for_partition``), hence its place
here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import rocksdict
from faust.stores import rocksdb
from faust.streams import current_event
from faust.types import TP, EventT

from streamapp.pipeline.state import COUNTS_KEY, STORE_OPTIONS, apply_change, decode_counts, encode_counts


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
