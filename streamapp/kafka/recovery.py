"""Faust's table recovery, restoring partitions that are behind in bulk first.

Reads: the tables' changelog topics, with a plain aiokafka consumer. Writes:
the :class:`~streamapp.kafka.store.CountingStore` of each table.

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
membership. The app installs it through its ``TableManager`` setting
(:class:`TableManager`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from faust.tables import TableManager as FaustTableManager
from faust.tables.recovery import Recovery as FaustRecovery
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth, server_list
from faust.types import TP

from streamapp.kafka.store import CountingStore

log = logging.getLogger(__name__)


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
        # a stored offset the log no longer holds (retention): from its start
        auto_offset_reset="earliest",
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
                try:
                    await restore(self.app, behind, self._generation_id)
                except (KafkaError, OSError) as exc:
                    # Faust's recovery reads the rest, from the offsets stored so far
                    log.warning("bulk restore stopped (%r); Faust's recovery goes on from the stored offsets", exc)
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
