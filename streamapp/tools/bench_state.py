"""``streamapp bench --only state``: what the tables' state costs as it grows.

Reads: nothing but what it writes. Writes: per level of N a throw-away
embedded stack in ``<data-dir>/state/n-<N>/`` (its logs are kept there for
reading afterwards), progress on stderr, and per level one object of the
bench's ``state`` list (:func:`table` prints them).

For each N in ``--entries`` (default 0, 100,000, 1,000,000) with the bench's
``--partitions`` (default 8), in order:

1. preload: N counted images written to the ``images`` table's changelog
   (:mod:`streamapp.embedded.preload`, records exactly as the tally writes
   them, round-robin over the partitions), so the workers get them through
   Faust's own changelog recovery, the path a real restart takes;
2. initial recovery (informative): worker 0 started on an empty data dir;
   seconds from its launch to ``GET /digits/`` answering the preloaded counts;
3. restart: worker 0 killed with SIGKILL (its process group, as a crash
   would), started again on the same data dir; seconds from launch to
   ``/digits/`` answering the right counts (``restart_to_serving_s``);
4. ``GET /digits/``: 1,000 sequential requests over one keep-alive
   connection to the restarted worker, alone in its group (10 warm-up
   requests first, not counted); p50 and p99 in ms, and every answer is
   checked against the expected counts;
5. RSS of the restarted worker (``VmRSS`` from ``/proc``, MiB), after those
   requests (``rss_mb``); also the broker's, after the preload and at the end;
6. fresh worker: worker 1 started on an empty data dir joins the group of
   one; seconds from its launch to its own ``/digits/`` answering the right
   counts while its ``/stats/`` shows it holding partitions as ``local`` and
   worker 0's the others, none claimed by both (a worker can go on serving
   an assignment the group has already replaced, e.g. after its session
   expired: that is not counted as serving) (``fresh_worker_to_serving_s``);
   which partitions each worker then holds, how often worker 1 joined the
   group during the level, and how many changelog records it had to replay
   for its active partitions (its share) and for its standby replicas, read
   from the recovery tables Faust logs (and from the bulk restore's log
   line, when one ran);
7. (informative) ``GET /digits/`` again, 1,000 requests to worker 1, which
   now asks worker 0 for its partitions over HTTP.

Every wait polls (every 50 ms) against a deadline; nothing sleeps a fixed
time. Each start's timeline (process up, group joined, partitions assigned,
changelog reading started and done, recovery complete, worker ready) is read
from the worker's log, whose lines carry millisecond timestamps, so the table
shows where the time of a start goes.

Why one stack per level rather than one stack growing N: the embedded broker
keeps every record in memory and never compacts (docs/DESIGN.md, "State"), so
a growing stack would carry the earlier levels' records and groups into the
later ones. A stack per level starts each N from nothing: its changelog holds
exactly N records, the broker's memory is that of N, no member of an earlier
level's group is still waiting to expire, and the logs of a level are its
own. It costs a stack start (a few seconds) per level.

The machine is small (2 cores) and may be shared: ``loadavg`` records the
1-minute load average at the start and end of each level, to judge the noise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from streamapp.embedded.preload import changelog_topic, preload_counted
from streamapp.embedded.process import ServiceFailed, free_port
from streamapp.embedded.stack import Stack, StackConfig
from streamapp.tools.bench import percentile, say

DEFAULT_ENTRIES = (0, 100_000, 1_000_000)
GET_REQUESTS = 1000
WARM_UP_REQUESTS = 10
POLL_S = 0.05
#: a start that does not serve within this long fails its level (seconds)
START_TIMEOUT_S = 600.0

#: log lines marking a start's phases (first occurrence after the launch)
MARKERS = (
    ("process_up", "[^Worker]: Starting"),
    ("joined_group", "Joined group"),
    ("assigned", "Executing _on_partitions_assigned"),
    # the bulk restore (streamapp.kafka.recovery.restore), inside Faust's recovery, when one is needed
    ("bulk_restore_start", "from the changelogs"),
    ("bulk_restore_done", "records in "),
    ("recovery_started", "Highwater for active changelog partitions"),
    ("reading_changelog", "Restoring state from changelog topics"),
    ("changelog_read", "Done reading from changelog topics"),
    ("recovery_complete", "Recovery complete"),
    ("worker_ready", "Worker ready"),
)


def parse_entries(text: str) -> list[int]:
    """``0,100000,1e6`` -> [0, 100000, 1000000]."""
    try:
        levels = [int(float(part)) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"entries: comma-separated numbers, not {text!r}") from exc
    if not levels or min(levels) < 0:
        raise argparse.ArgumentTypeError("entries: one or more numbers >= 0")
    return levels


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of ``pid`` in MiB (``VmRSS``); None if it is gone."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


# -- the worker's log: timeline and recovery tables --------------------------------

_BULK_RESTORED = re.compile(r"restored (\d+) records in ")
_RECORD = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\] \[\d+\] \[\w+\] (.*)$")
_TABLE_TITLE = re.compile(r"^\+([^-+][^+]*?)-{2,}")


@dataclass
class LogRecord:
    at: float  # epoch seconds
    message: str
    lines: list[str] = field(default_factory=list)  # continuation lines (Faust's tables)


def read_log(path: Path, offset: int) -> list[LogRecord]:
    """The worker log's records written from byte ``offset`` on."""
    try:
        with open(path, "rb") as log_file:
            log_file.seek(offset)
            text = log_file.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    records: list[LogRecord] = []
    for line in text.splitlines():
        match = _RECORD.match(line)
        if match:
            stamp, millis, message = match.groups()
            at = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000
            records.append(LogRecord(at, message))
        elif records:
            records[-1].lines.append(line)
    return records


def log_tables(record: LogRecord) -> dict[str, dict[tuple[str, int], int]]:
    """Faust's recovery tables in a record: title -> (topic, partition) -> offset."""
    tables: dict[str, dict[tuple[str, int], int]] = {}
    current: dict[tuple[str, int], int] | None = None
    topic = ""
    for line in record.lines:
        title = _TABLE_TITLE.match(line)
        if title:
            current = tables.setdefault(title.group(1).strip(), {})
            continue
        if current is None or not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[1] == "partition":
            continue
        topic = topic if cells[0] == "〃" else cells[0]
        try:
            current[(topic, int(cells[1]))] = int(cells[2])
        except ValueError:
            continue
    return tables


@dataclass
class Launch:
    """One start of a worker: when, and where its log stood."""

    index: int
    launched: float  # epoch seconds
    log_path: Path
    log_offset: int

    def records(self, until: float | None = None) -> list[LogRecord]:
        records = read_log(self.log_path, self.log_offset)
        return [r for r in records if until is None or r.at <= until + 0.5]

    def timeline(self, until: float | None = None) -> dict[str, float]:
        """Marker -> seconds from launch, first occurrence of each."""
        found: dict[str, float] = {}
        joins = 0
        for record in self.records(until):
            joins += "Joined group" in record.message
            for name, text in MARKERS:
                if name not in found and text in record.message:
                    found[name] = round(record.at - self.launched, 3)
        found["group_joins"] = joins
        return found

    def replayed(self, topic: str, until: float | None = None) -> dict[str, Any]:
        """Changelog records of ``topic`` this start had to read: in a bulk
        restore before Faust's recovery (its log line), and in Faust's recovery
        (the last highwater and start-offset tables it logged), active and
        standby. ``active`` is both together."""
        latest: dict[str, dict[tuple[str, int], int]] = {}
        bulk = None
        for record in self.records(until):
            latest.update(log_tables(record))
            match = _BULK_RESTORED.search(record.message)
            if match:
                bulk = (bulk or 0) + int(match.group(1))
        figures: dict[str, Any] = {"bulk": bulk}
        for kind in ("Active", "Standby"):
            highwater = latest.get(f"Highwater - {kind}")
            start = latest.get(f"Reading Starts At - {kind}")
            if highwater is None or start is None:
                figures[kind.lower()] = None
                continue
            figures[kind.lower()] = sum(
                max(0, hw - start.get(tp, -1)) for tp, hw in highwater.items() if tp[0] == topic
            )
            figures[f"{kind.lower()}_partitions"] = sorted(p for t, p in highwater if t == topic)
        figures["faust_active"] = figures["active"]
        if bulk is not None:
            figures["active"] = (figures["active"] or 0) + bulk
        return figures


# -- one level ----------------------------------------------------------------------


class StateLevel:
    """The measurements at one N, on a stack of its own (already started)."""

    def __init__(self, stack: Stack, entries: int) -> None:
        self.stack = stack
        self.entries = entries
        self.partitions = stack.config.partitions
        self.topic = changelog_topic(stack.settings.app_id)
        self.expected: dict[str, int] = {}
        self.result: dict[str, Any] = {"entries": entries, "partitions": self.partitions}

    # -- helpers -------------------------------------------------------------------

    def launch(self, index: int) -> Launch:
        log_path = self.stack.logs / f"worker-{index}.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        launched = time.time()
        self.stack.start_worker(index)
        return Launch(index, launched, log_path, offset)

    async def get(self, session: aiohttp.ClientSession, url: str) -> tuple[int, Any] | None:
        """(status, JSON body or None); None when nothing answered."""
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                body = await response.read()
                try:
                    return response.status, json.loads(body)
                except ValueError:
                    return response.status, None
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None

    async def local_partitions(self, session: aiohttp.ClientSession, index: int) -> set[int] | None:
        """The partitions worker ``index``'s /stats/ shows it holding itself; None: no answer."""
        answer = await self.get(session, self.stack.web_url(index) + "/stats/")
        if not answer or answer[0] != 200:
            return None
        return {int(p) for p, source in answer[1]["worker"]["partitions"].items() if source == "local"}

    async def settled(self, session: aiohttp.ClientSession, index: int, peers: Sequence[int]) -> bool:
        """Worker ``index`` holds partitions of its own, and with ``peers`` the
        held sets are disjoint and cover every partition: one generation's
        assignment, not a worker still serving one the group has left behind."""
        held = [await self.local_partitions(session, i) for i in (index, *peers)]
        if any(h is None for h in held) or not held[0]:
            return False
        sets = [h for h in held if h is not None]
        union = set().union(*sets)
        return sum(map(len, sets)) == len(union) and union == set(range(self.partitions))

    async def wait_serving(self, session: aiohttp.ClientSession, launch: Launch, *,
                           settled_with: Sequence[int] | None = None) -> dict[str, Any]:
        """Poll the worker until its /digits/ equals the expected counts (and,
        with ``settled_with``, it holds its share: :meth:`settled`)."""
        index = launch.index
        base = self.stack.web_url(index)
        deadline = time.monotonic() + START_TIMEOUT_S
        first_answer = first_ok = None
        last: Any = None
        while time.monotonic() < deadline:
            self.stack.workers[index].check()
            answer = await self.get(session, base + "/digits/")
            now = time.time()
            if answer is not None:
                first_answer = first_answer or now
                status, body = answer
                last = answer
                if status == 200:
                    first_ok = first_ok or now
                if status == 200 and body == self.expected:
                    if settled_with is None:
                        return self._served(launch, now, first_answer, first_ok)
                    if await self.settled(session, index, settled_with):
                        return self._served(launch, time.time(), first_answer, first_ok)
            await asyncio.sleep(POLL_S)
        raise TimeoutError(
            f"worker-{index} did not serve the expected counts within {START_TIMEOUT_S:.0f}s "
            f"(last answer: {last}); see {launch.log_path}:\n{self.stack.workers[index].log_tail()}"
        )

    def _served(self, launch: Launch, at: float, first_answer: float | None, first_ok: float | None) -> dict[str, Any]:
        def since(t: float | None) -> float | None:
            return None if t is None else round(t - launch.launched, 3)

        timeline = launch.timeline(until=at)
        timeline.update({"web_answers": since(first_answer), "digits_200": since(first_ok), "serving": since(at)})
        return {"seconds": at - launch.launched, "timeline": timeline, "replayed": launch.replayed(self.topic, at)}

    async def digits_latency(self, index: int, requests: int = GET_REQUESTS) -> dict[str, Any]:
        """Sequential GET /digits/ over one keep-alive connection: ms per request."""
        url = self.stack.web_url(index) + "/digits/"
        latencies: list[float] = []
        wrong = 0
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
            for n in range(WARM_UP_REQUESTS + requests):
                started = time.perf_counter()
                async with session.get(url) as response:
                    body = await response.read()
                elapsed = time.perf_counter() - started
                if n < WARM_UP_REQUESTS:
                    continue
                latencies.append(elapsed * 1000)
                if response.status != 200 or json.loads(body) != self.expected:
                    wrong += 1
        return {"p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
                "max_ms": max(latencies), "wrong_answers": wrong}

    async def partitions_held(self, session: aiohttp.ClientSession, index: int) -> dict[str, str]:
        """Worker ``index``'s /stats/ partition sources, once it answers."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            answer = await self.get(session, self.stack.web_url(index) + "/stats/")
            if answer and answer[0] == 200:
                return answer[1]["worker"]["partitions"]
            await asyncio.sleep(POLL_S)
        return {}

    def broker_rss(self) -> float | None:
        broker = self.stack.broker
        return rss_mb(broker.process.pid if broker and broker.process else None)

    # -- the sequence ----------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        r = self.result
        n = self.entries
        stack = self.stack
        app_id = stack.settings.app_id
        # the broker would create an unknown topic with 4 partitions: the
        # changelogs get the stack's count before anything is written
        await asyncio.to_thread(stack.broker.create_topics, {
            self.topic: self.partitions, changelog_topic(app_id, "dead-letters"): self.partitions})
        r["broker_rss_start_mb"] = self.broker_rss()

        say(f"-- N={n:,}: preloading {n:,} counted images into {self.topic} ({self.partitions} partitions)")
        started = time.monotonic()
        added = await preload_counted(stack.broker.bootstrap, self.topic, partitions=self.partitions, count=n)
        r["preload_s"] = time.monotonic() - started
        r["preload_records_per_s"] = n / r["preload_s"] if n else None
        self.expected = {str(d): added.get(d, 0) for d in range(10)}
        r["broker_rss_after_preload_mb"] = self.broker_rss()
        say(f"   preloaded in {r['preload_s']:.1f}s; broker RSS {r['broker_rss_after_preload_mb']:.0f} MiB")

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as session:
            say("   worker 0: first start, recovering the changelog (empty data dir)")
            served = await self.wait_serving(session, self.launch(0))
            r["initial_recovery_s"] = served["seconds"]
            r["initial_timeline"] = served["timeline"]
            r["initial_replayed_records"] = served["replayed"].get("active")
            r["initial_bulk_restored_records"] = served["replayed"].get("bulk")
            r["initial_recovery_records_per_s"] = self._replay_rate(served)
            r["rss_after_initial_recovery_mb"] = rss_mb(stack.workers[0].pid)
            say(f"   serving after {served['seconds']:.2f}s ({self._summary(served)})")

            say("   worker 0: kill -9, restart on the same data dir")
            killed = stack.workers[0]
            killed.signal(signal.SIGKILL)
            await asyncio.to_thread(killed.proc.wait, 30)  # type: ignore[union-attr]
            served = await self.wait_serving(session, self.launch(0))
            r["restart_to_serving_s"] = served["seconds"]
            r["restart_timeline"] = served["timeline"]
            r["restart_replayed_records"] = served["replayed"].get("active")
            say(f"   serving after {served['seconds']:.2f}s ({self._summary(served)})")

            say(f"   GET /digits/ x {GET_REQUESTS} (worker 0 alone)")
            latency = await self.digits_latency(0)
            r["get_digits_p50_ms"] = latency["p50_ms"]
            r["get_digits_p99_ms"] = latency["p99_ms"]
            r["get_digits_max_ms"] = latency["max_ms"]
            r["get_digits_wrong_answers"] = latency["wrong_answers"]
            r["rss_mb"] = rss_mb(stack.workers[0].pid)
            say(f"   p50 {latency['p50_ms']:.2f} ms, p99 {latency['p99_ms']:.2f} ms, "
                f"{latency['wrong_answers']} wrong; worker RSS {r['rss_mb']:.0f} MiB")

            say("   worker 1: fresh data dir, joins the group of one")
            fresh = self.launch(1)
            served = await self.wait_serving(session, fresh, settled_with=[0])
            r["fresh_worker_to_serving_s"] = served["seconds"]
            r["fresh_timeline"] = served["timeline"]
            replayed = served["replayed"]
            r["fresh_worker_restored_records"] = replayed.get("active")
            r["fresh_worker_standby_records"] = replayed.get("standby")
            r["fresh_worker_bulk_restored_records"] = replayed.get("bulk")
            r["fresh_worker_recovery_records_per_s"] = self._replay_rate(served)
            held = {f"worker-{i}": await self.partitions_held(session, i) for i in (0, 1)}
            r["partitions_local"] = {w: sorted(int(p) for p, s in h.items() if s == "local") for w, h in held.items()}
            say(f"   serving after {served['seconds']:.2f}s ({self._summary(served)}); "
                f"local partitions {r['partitions_local']}")

            say(f"   GET /digits/ x {GET_REQUESTS} (worker 1, asking worker 0 for its partitions)")
            latency = await self.digits_latency(1)
            # a group that kept rebalancing after the fresh worker served shows here
            r["fresh_worker_group_joins"] = fresh.timeline()["group_joins"]
        r["two_workers_get_digits_p50_ms"] = latency["p50_ms"]
        r["two_workers_get_digits_p99_ms"] = latency["p99_ms"]
        r["two_workers_get_digits_wrong_answers"] = latency["wrong_answers"]
        r["worker1_rss_mb"] = rss_mb(stack.workers[1].pid)
        r["broker_rss_end_mb"] = self.broker_rss()
        say(f"   p50 {latency['p50_ms']:.2f} ms, p99 {latency['p99_ms']:.2f} ms; "
            f"worker 1 RSS {r['worker1_rss_mb']:.0f} MiB, broker RSS {r['broker_rss_end_mb']:.0f} MiB")
        return r

    @staticmethod
    def _replay_rate(served: Mapping[str, Any]) -> float | None:
        """Active records replayed per second, from the assignment to the end of recovery."""
        timeline, records = served["timeline"], served["replayed"].get("active")
        if not records or "assigned" not in timeline or "recovery_complete" not in timeline:
            return None
        seconds = timeline["recovery_complete"] - timeline["assigned"]
        return records / seconds if seconds > 0 else None

    @staticmethod
    def _summary(served: Mapping[str, Any]) -> str:
        names = [name for name, _ in MARKERS] + ["serving"]
        timeline = served["timeline"]
        parts = [f"{name} {timeline[name]:.2f}" for name in names if timeline.get(name) is not None]
        replayed = served["replayed"]
        if replayed.get("active") is not None:
            bulk = f", {replayed['bulk']:,} of them in the bulk restore" if replayed.get("bulk") is not None else ""
            parts.append(f"replayed {replayed['active']:,} active records{bulk}")
        return ", ".join(parts)


# -- all levels -----------------------------------------------------------------------


def measure(entries: Sequence[int], *, data_dir: Path, partitions: int,
            worker_settings: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every level on a stack of its own; a failed level is reported, not fatal."""
    results = []
    for n in entries:
        level_dir = data_dir / "state" / f"n-{n}"
        shutil.rmtree(level_dir, ignore_errors=True)  # the level's own stack: logs and state from nothing
        config = StackConfig(data_dir=level_dir, web_port=free_port(), partitions=partitions,
                             worker_settings=dict(worker_settings))
        say(f"== state, N={n:,}: starting a stack in {level_dir} ...")
        stack = Stack(config)
        level = StateLevel(stack, n)
        level.result["loadavg_start"] = loadavg()
        started = time.monotonic()
        try:
            stack.start(workers=0)
            asyncio.run(level.run())
        except (ServiceFailed, TimeoutError, OSError, aiohttp.ClientError) as exc:
            level.result["error"] = f"{type(exc).__name__}: {exc}"
            say(f"   N={n:,} FAILED: {level.result['error']}")
        finally:
            stack.stop()
        level.result["loadavg_end"] = loadavg()
        level.result["level_s"] = time.monotonic() - started
        level.result["logs"] = str(stack.logs)
        results.append(level.result)
    return results


# -- reporting ------------------------------------------------------------------------


def goals(levels: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, bool | None]]:
    """The issue's goals, the largest N against N=0 of the same run: (goal, figures, met)."""
    by_n = {level["entries"]: level for level in levels if "error" not in level}
    if 0 not in by_n or max(by_n) == 0:
        return []
    zero, top = by_n[0], by_n[max(by_n)]
    needed = ("restart_to_serving_s", "get_digits_p99_ms", "rss_mb", "fresh_worker_to_serving_s")
    if any(level.get(key) is None for level in (zero, top) for key in needed):
        return []
    n = f"{top['entries']:,}"

    def check(name: str, figures: str, ok: bool) -> tuple[str, str, bool]:
        return name, figures, ok

    r0, r1 = zero["restart_to_serving_s"], top["restart_to_serving_s"]
    p0, p1 = zero["get_digits_p99_ms"], top["get_digits_p99_ms"]
    m0, m1 = zero["rss_mb"], top["rss_mb"]
    f1 = top["fresh_worker_to_serving_s"]
    share = top.get("fresh_worker_restored_records")
    local = len(top.get("partitions_local", {}).get("worker-1", []))
    expected_share = top["entries"] * local // top["partitions"]
    return [
        check("restart <= 2x N=0 and <= 10 s", f"{r1:.2f} s at {n} vs {r0:.2f} s", r1 <= 2 * r0 and r1 <= 10),
        check("fresh worker serves in <= 60 s", f"{f1:.2f} s at {n}", f1 <= 60),
        check("fresh worker restores only its share",
              f"{share} records for {local} of {top['partitions']} partitions (share {expected_share:,})",
              share is not None and local > 0 and share <= expected_share),
        check("GET /digits/ p99 <= 2x N=0 and <= 5 ms", f"{p1:.2f} ms at {n} vs {p0:.2f} ms",
              p1 <= 2 * p0 and p1 <= 5),
        check("RSS <= RSS at N=0 + 50 MB", f"{m1:.0f} MiB at {n} vs {m0:.0f} MiB", m1 <= m0 + 50),
    ]


def table(levels: Sequence[Mapping[str, Any]]) -> str:
    columns = (
        ("entries", "entries", "{:,}"),
        ("preload_s", "preload s", "{:.1f}"),
        ("initial_recovery_s", "initial recovery s", "{:.2f}"),
        ("restart_to_serving_s", "restart s", "{:.2f}"),
        ("fresh_worker_to_serving_s", "fresh worker s", "{:.2f}"),
        ("get_digits_p50_ms", "GET p50 ms", "{:.2f}"),
        ("get_digits_p99_ms", "GET p99 ms", "{:.2f}"),
        ("rss_mb", "worker RSS MiB", "{:.0f}"),
        ("broker_rss_end_mb", "broker RSS MiB", "{:.0f}"),
    )

    def cell(level: Mapping[str, Any], key: str, fmt: str) -> str:
        value = level.get(key)
        return "-" if value is None else fmt.format(value)

    rows = [[title for _, title, _ in columns]]
    rows += [[cell(level, key, fmt) for key, _, fmt in columns] for level in levels]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = ["  ".join(text.rjust(width) for text, width in zip(row, widths, strict=True)) for row in rows]
    for level in levels:
        if "error" in level:
            lines.append(f"N={level['entries']:,} failed: {level['error'].splitlines()[0]}")
            continue
        share = level.get("partitions_local", {})
        lines.append(
            f"N={level['entries']:,}: replayed on restart {level.get('restart_replayed_records')}, "
            f"fresh worker restored {level.get('fresh_worker_restored_records')} "
            f"(joined the group {level.get('fresh_worker_group_joins')}x) "
            f"(+{level.get('fresh_worker_standby_records')} standby) for partitions {share.get('worker-1')}; "
            f"initial recovery {_rate(level.get('initial_recovery_records_per_s'))}, "
            f"fresh {_rate(level.get('fresh_worker_recovery_records_per_s'))}; "
            f"two workers GET p50/p99 {level.get('two_workers_get_digits_p50_ms', float('nan')):.2f}/"
            f"{level.get('two_workers_get_digits_p99_ms', float('nan')):.2f} ms; "
            f"load {level.get('loadavg_start')}-{level.get('loadavg_end')}"
        )
    for name, figures, ok in goals(levels):
        lines.append(f"goal {'met ' if ok else 'MISSED'}  {name}: {figures}")
    return "\n".join(lines)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} records/s"
