"""Totals for the whole cluster: every partition's counts, from the worker that owns it.

Reads: this worker's :class:`~streamapp.kafka.store.CountingStore` partitions, and
the other workers' over HTTP (``GET /internal/counts/<table>/?partitions=..``,
served by :func:`local_counts`), found through Faust's table routing
(``app.router.table_metadata``). Writes: nothing.

A query costs O(partitions x values): each owner reads its partitions' stored
counts, nobody scans entries. A partition whose owner does not answer (killed,
still recovering) is read from a standby replica, this worker's or a peer's;
a partition nobody can answer for is reported missing, and the pages answer
503 rather than a short count.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
from faust.types import TP, AppT, CollectionT

log = logging.getLogger(__name__)

#: the internal page a worker serves its partitions' counts on
COUNTS_PATH = "/internal/counts/{table}/"


@dataclasses.dataclass
class Totals:
    """Counts over the partitions that could be read, and where each came from."""

    counts: Counter[Any]
    sources: dict[int, str]  # partition -> "local", the owner's URL, "standby" (here) or "standby <URL>"
    missing: list[int]

    @property
    def complete(self) -> bool:
        return not self.missing


def _changelog_tps(tps: Iterable[TP], table: CollectionT) -> set[int]:
    topic = table.changelog_topic_name  # type: ignore[attr-defined]
    return {tp.partition for tp in tps if tp.topic == topic}


def serving(app: AppT) -> bool:
    """Whether this worker's active partitions are recovered and not mid-rebalance."""
    return app.tables.recovery.completed.is_set() and not app.rebalancing and not app.in_recovery


def local_counts(app: AppT, table: CollectionT, partitions: Iterable[int], *,
                 standby: bool = False) -> dict[int, Mapping[bytes, int]]:
    """Stored counts of those ``partitions`` this worker holds as active (or, with
    ``standby``, as standby) replica and can answer for now."""
    if not serving(app):
        return {}
    held = app.assignor.assigned_standbys() if standby else app.assignor.assigned_actives()
    mine = _changelog_tps(held, table)
    store = table.data
    return {p: store.partition_counts(p) for p in partitions if p in mine}  # type: ignore[attr-defined]


def _decode(app: AppT, table: CollectionT, counts: Mapping[bytes, int]) -> Counter[Any]:
    return Counter({
        app.serializers.loads_value(table.value_type, raw, serializer=table.value_serializer): n
        for raw, n in counts.items()
    })


def encode_partition_counts(counts: Mapping[int, Mapping[bytes, int]]) -> dict[str, dict[str, int]]:
    """The internal page's JSON: partition -> serialized value (text) -> count."""
    return {str(p): {raw.decode("utf-8"): n for raw, n in c.items()} for p, c in counts.items()}


def decode_partition_counts(data: Mapping[str, Mapping[str, int]]) -> dict[int, dict[bytes, int]]:
    return {int(p): {raw.encode("utf-8"): int(n) for raw, n in c.items()} for p, c in data.items()}


def this_worker(app: AppT) -> str:
    """This worker's URL, as its peers know it."""
    return str(app.conf.canonical_url).rstrip("/")


def members(app: AppT, table: CollectionT) -> dict[str, list[int]]:
    """Every worker of the group by URL, this one included, with the partitions
    of ``table`` Faust assigned it (its active ones)."""
    topic = table.changelog_topic_name  # type: ignore[attr-defined]
    found = {str(url).rstrip("/"): sorted(topics.get(topic, ()))
             for url, topics in app.router.table_metadata(table.name).items()}
    found.setdefault(this_worker(app), [])
    return found


async def peer_json(session: aiohttp.ClientSession, url: str, *, timeout: float,
                    params: Mapping[str, str] | None = None) -> Any:
    """A peer's JSON answer to ``GET url``, or None when it does not answer 200 in time."""
    try:
        async with session.get(url, params=params, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status == 200:
                return await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.debug("GET %s %s: %r", url, params or "", exc)
    return None


async def _ask(session: aiohttp.ClientSession, url: str, table: CollectionT, partitions: list[int],
               timeout: float, replica: str = "active") -> dict[int, dict[bytes, int]]:
    params = {"partitions": ",".join(map(str, partitions)), "replica": replica}
    answer = await peer_json(session, url + COUNTS_PATH.format(table=table.name), timeout=timeout, params=params)
    try:
        return decode_partition_counts(answer["partitions"]) if answer is not None else {}
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        log.debug("counts of %s partitions %s from %s: %r", table.name, partitions, url, exc)
        return {}


async def cluster_totals(app: AppT, table: CollectionT, session: aiohttp.ClientSession, *,
                         timeout: float = 2.0) -> Totals:
    """Counts of ``table`` over all its partitions, from any worker."""
    # the changelog has its source topic's partitions (Faust refuses another
    # count), TOPIC_PARTITIONS unless the table says otherwise
    total = table.partitions or app.conf.topic_partitions
    wanted = list(range(total))
    me = this_worker(app)
    found: dict[int, Mapping[bytes, int]] = {}
    sources: dict[int, str] = {}

    def take(answer: Mapping[int, Mapping[bytes, int]], allowed: Iterable[int], source: str) -> None:
        # the first answer for a partition wins: active before standby
        for p in set(allowed) & set(answer):
            if p not in found:
                found[p], sources[p] = answer[p], source

    take(local_counts(app, table, wanted), wanted, "local")
    # the owners of the rest, by Faust's assignment: host URL -> partitions
    peers = {url: [p for p in parts if p not in found] for url, parts in members(app, table).items() if url != me}
    asked = {url: parts for url, parts in peers.items() if parts}
    answers = await asyncio.gather(*(_ask(session, url, table, parts, timeout) for url, parts in asked.items()))
    for (url, parts), answer in zip(asked.items(), answers, strict=True):
        take(answer, parts, url)
    # an owner that did not answer: a standby replica, here or on a peer
    rest = [p for p in wanted if p not in found]
    take(local_counts(app, table, rest, standby=True), rest, "standby")
    rest = [p for p in wanted if p not in found]
    if rest and peers:
        answers = await asyncio.gather(*(_ask(session, url, table, rest, timeout, "standby") for url in peers))
        for url, answer in zip(peers, answers, strict=True):
            take(answer, rest, f"standby {url}")
    merged: Counter[bytes] = Counter()
    for counts in found.values():
        merged.update(counts)
    return Totals(_decode(app, table, merged), sources, [p for p in wanted if p not in found])
