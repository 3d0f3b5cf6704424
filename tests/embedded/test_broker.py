"""The embedded broker (Tansu) and the ``tansu://`` transport's work-arounds.

Starts the real broker binary and real Faust workers (``tests/embedded/apps/
counter.py``, a per-key counter with a Table and a GlobalTable) as child
processes, and checks each deviation listed in /work/shared/BROKER.md that
``streamapp.embedded.tansu`` works around. Timings are printed (``pytest -s``)
and asserted with generous bounds.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.protocol.fetch import FetchRequest

from streamapp.embedded import tansu
from streamapp.embedded.broker import EmbeddedBroker, topic_partitions
from streamapp.embedded.process import ManagedProcess, free_port
from streamapp.kafka import transport as kafka_transport
from tests.support import counting_requests

pytestmark = pytest.mark.integration

APPS_DIR = Path(__file__).parent / "apps"
ENTRY_POINT = "tansu = streamapp.embedded.tansu:TansuTransport"


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def transport_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """PYTHONPATH for workers: the test app, and the ``tansu`` entry point if missing.

    Until setup.cfg declares the entry point (and the package is reinstalled),
    a minimal distribution declaring only it stands in, so the workers resolve
    ``tansu://`` exactly as they will once it is installed.
    """
    paths = [str(APPS_DIR)]
    registered = {ep.name for ep in importlib.metadata.entry_points(group="faust.transports")}
    if "tansu" not in registered:
        site = tmp_path_factory.mktemp("entry-point")
        dist = site / "streamapp_tansu_transport-0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: streamapp-tansu-transport\nVersion: 0\n")
        (dist / "entry_points.txt").write_text(f"[faust.transports]\n{ENTRY_POINT}\n")
        paths.append(str(site))
    return os.pathsep.join(paths)


class Workers:
    """Counter-app workers of one app id, on one topic; all stopped at teardown."""

    def __init__(
        self, broker: EmbeddedBroker, tmp: Path, pythonpath: str, app_id: str, topic: str, app: str = "counter"
    ) -> None:
        self.broker = broker
        self.app = app
        self.tmp = tmp
        self.pythonpath = pythonpath
        self.app_id = app_id
        self.topic = topic
        self.procs: dict[str, ManagedProcess] = {}
        self.ports: dict[str, int] = {}
        self.started_at: dict[str, float] = {}

    def start(self, name: str, **extra_env: str) -> ManagedProcess:
        port = free_port()
        env = dict(os.environ)
        env.update(tansu.worker_environment())
        env.update(
            {
                "BROKER_URL": self.broker.url,
                "WEB_PORT": str(port),
                "WEB_BIND": "127.0.0.1",
                "WEB_HOST": "127.0.0.1",
                "APP_DATADIR": str(self.tmp / name),
                "PYTHONPATH": self.pythonpath,
                "COUNTER_APP_ID": self.app_id,
                "COUNTER_TOPIC": self.topic,
                **extra_env,
            }
        )
        proc = ManagedProcess(
            name,
            [sys.executable, "-m", "faust", "-A", self.app, "worker", "-l", "info"],
            log_path=self.tmp / f"{name}.log",
            env=env,
            cwd=self.tmp,
        )
        self.started_at[name] = time.time()
        proc.start()
        self.procs[name] = proc
        self.ports[name] = port
        return proc

    def state(self, name: str) -> dict[str, Any] | None:
        """The worker's ``/counts/`` page, or ``None`` while it does not answer."""
        self.procs[name].check()
        try:
            url = f"http://127.0.0.1:{self.ports[name]}/counts/"
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.loads(response.read())
        except OSError:
            return None

    def wait(self, name: str, predicate: Callable[[dict[str, Any]], Any], *, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.state(name)
            if last is not None and predicate(last):
                return last
            time.sleep(0.05)
        raise AssertionError(
            f"{name}: timed out after {timeout:.0f}s waiting for {what}; last state: {last!r}\n"
            f"{self.procs[name].log_tail(40)}"
        )

    def stop(self, name: str) -> int | None:
        return self.procs.pop(name).stop(timeout=20)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


@pytest.fixture
def workers(
    broker: EmbeddedBroker, tmp_path: Path, transport_path: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Workers]]:
    made: list[Workers] = []

    def make(partitions: int = 4, app: str = "counter") -> Workers:
        name = request.node.name.replace("_", "-").replace("[", "-").rstrip("]")
        topic = f"{name}-in-{len(made)}"
        broker.create_topics({topic: partitions})
        group = Workers(broker, tmp_path, transport_path, app_id=f"{name}-{len(made)}", topic=topic, app=app)
        made.append(group)
        return group

    try:
        yield make
    finally:
        for group in made:
            group.stop_all()


def produce(bootstrap: str, topic: str, messages: list[tuple[str, bytes]], *, linger_ms: int = 20) -> None:
    """Send without waiting for each message, so the broker stores multi-record batches."""

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms)
        await producer.start()
        try:
            futures = [await producer.send(topic, key=key.encode(), value=value) for key, value in messages]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(send())


def end_offsets(bootstrap: str, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """(ListOffsets LATEST, Fetch high watermark) per partition of ``topic``."""

    async def read() -> tuple[dict[int, int], dict[int, int]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        try:
            tps = await topic_partitions(bootstrap, topic)
            listed = await consumer.end_offsets(tps)
            thread = SimpleNamespace(_ensure_consumer=lambda: consumer)
            # the transport's own method, not just the helper it calls
            fetched = await tansu.TansuConsumerThread._highwaters(thread, tps)  # type: ignore[arg-type]
            return {tp.partition: listed[tp] for tp in tps}, {tp.partition: fetched[tp] for tp in tps}
        finally:
            await consumer.stop()

    return asyncio.run(read())


# -- the broker -----------------------------------------------------------------------


def test_broker_starts_answers_and_stops(tmp_path: Path) -> None:
    started = time.monotonic()
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log")
    with broker:
        ready = time.monotonic() - started
        print(f"\nbroker ready in {ready:.2f}s at {broker.url} ({broker.bootstrap})")
        assert broker.url == f"tansu://127.0.0.1:{broker.port}"
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        broker.wait_ready(timeout=5)  # answers Metadata, not just an open port
        process = broker.process
        assert process is not None and process.running()
    assert not process.running()
    assert broker.process is None


def test_topics_are_created_with_their_partition_counts(broker: EmbeddedBroker) -> None:
    broker.create_topics({"created-1": 1, "created-3": 3, "created-8": 8})
    assert [broker.partitions(t) for t in ("created-1", "created-3", "created-8")] == [1, 3, 8]
    broker.create_topics({"created-3": 3})  # existing: left alone
    assert broker.partitions("created-3") == 3
    assert broker.partitions("never-created") is None


def test_tansu_scheme_resolves_to_the_transport(transport_path: str) -> None:
    code = "import faust.transport as t; c = t.by_url('tansu://127.0.0.1:1'); print(c.__module__, c.__name__)"
    env = {**os.environ, "PYTHONPATH": transport_path}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["streamapp.embedded.tansu", "TansuTransport"]


# -- a. end offsets -------------------------------------------------------------------------


def test_highwaters_are_the_true_end_after_multi_record_batches(broker: EmbeddedBroker) -> None:
    broker.create_topics({"batches": 3})
    # partition 2 stays empty; 0 and 1 get 500 records each in batches
    produce(broker.bootstrap, "batches", [(f"k{i}", b"x") for i in range(1000)])
    # keys land by hash, so count what each partition really holds
    listed, fetched = end_offsets(broker.bootstrap, "batches")
    print(f"\nListOffsets(LATEST): {listed}\nFetch high watermark: {fetched}")
    assert sum(fetched.values()) == 1000
    assert listed != fetched, "the broker no longer shows the ListOffsets deviation"
    assert all(fetched[p] >= listed[p] for p in listed)


def test_graceful_restart_recovers_the_table_exactly(broker: EmbeddedBroker, workers: Callable[..., Workers]) -> None:
    group = workers()
    group.start("w1")
    group.wait("w1", lambda s: s["recovered"] and s["assignment"], timeout=30, what="assignment")
    messages = [(f"key-{i % 50}", b"v") for i in range(5000)]
    produce(broker.bootstrap, group.topic, messages)
    expected = dict(Counter(key for key, _ in messages))
    # the global table is read back from its changelog: it can lag a moment
    group.wait(
        "w1", lambda s: s["counts"] == s["seen"] == expected, timeout=60, what="all 5,000 updates in both tables"
    )
    assert group.stop("w1") == 0

    changelog = f"{group.app_id}-counts-changelog"
    listed, fetched = end_offsets(broker.bootstrap, changelog)
    print(f"\nchangelog {changelog}: ListOffsets {listed}, Fetch high watermark {fetched}")
    assert listed != fetched, "the changelog holds no multi-record batch: the test would not see the deviation"

    started = time.monotonic()
    group.start("w2")
    after = group.wait("w2", lambda s: s["recovered"], timeout=30, what="table recovery")
    print(f"restarted worker recovered in {time.monotonic() - started:.1f}s: {sum(after['counts'].values())} of 5000")
    assert after["counts"] == expected
    assert after["seen"] == expected


# -- b. / c. group membership -----------------------------------------------------------


def test_graceful_stop_leaves_the_group(broker: EmbeddedBroker, workers: Callable[..., Workers]) -> None:
    group = workers()
    first = group.start("w1")
    produce(broker.bootstrap, group.topic, [("a", b"1")])
    state = group.wait("w1", lambda s: s["processed"] >= 1, timeout=30, what="the first message")
    startup = state["first_message_at"] - group.started_at["w1"]
    assert group.stop("w1") == 0
    assert "left group" in first.log_path.read_text(), "no LeaveGroup sent from generation 0"

    produce(broker.bootstrap, group.topic, [("b", b"2")])
    group.start("w2")
    state = group.wait("w2", lambda s: s["processed"] >= 1, timeout=30, what="the first message after restart")
    restart = state["first_message_at"] - group.started_at["w2"]
    print(f"\ntime to first message: start {startup:.2f}s, restart after a graceful stop {restart:.2f}s")
    assert restart < 8.0
    # "a" was committed by the first worker: not processed again, but in the recovered table
    assert state["processed"] == 1
    assert state["counts"] == {"a": 1, "b": 1}


def test_two_workers_share_partitions_and_see_every_key(
    broker: EmbeddedBroker, workers: Callable[..., Workers]
) -> None:
    group = workers()
    group.start("w1")
    group.start("w2")

    def split(state: dict[str, Any]) -> bool:
        return bool(state["recovered"] and state["assignment"] and len(state["assignment"]) < 4)

    a = group.wait("w1", split, timeout=45, what="a share of the partitions")
    b = group.wait("w2", split, timeout=45, what="a share of the partitions")
    assert sorted(a["assignment"] + b["assignment"]) == [0, 1, 2, 3]

    messages = [(f"key-{i % 40}", b"v") for i in range(400)]
    produce(broker.bootstrap, group.topic, messages)
    expected = dict(Counter(key for key, _ in messages))
    for name in ("w1", "w2"):
        group.wait(name, lambda s: s["seen"] == expected, timeout=30, what="every key in the global table")
    a, b = group.state("w1"), group.state("w2")
    assert a is not None and b is not None
    assert a["processed"] > 0 and b["processed"] > 0
    assert a["processed"] + b["processed"] == 400

    # takeover: the survivor gets every partition and the new messages
    assert group.stop("w2") == 0
    stopped = time.monotonic()
    produce(broker.bootstrap, group.topic, [(f"key-{i % 40}", b"v") for i in range(40)])
    group.wait(
        "w1",
        lambda s: len(s["assignment"]) == 4 and sum(s["seen"].values()) == 440,
        timeout=30,
        what="the takeover of every partition",
    )
    print(f"\ntakeover after a graceful stop: {time.monotonic() - stopped:.2f}s")


def test_an_idle_consumer_waits_longer_and_a_record_brings_the_short_wait_back(broker: EmbeddedBroker) -> None:
    """g.: held for the whole wait, idle fetches would cost CPU at the busy rate."""
    topic = f"idle-{uuid.uuid4().hex[:8]}"
    broker.create_topics({topic: 2})

    async def scenario() -> tuple[int, int, float, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, fetch_max_wait_ms=tansu.FETCH_WAIT_MS,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            tps = await topic_partitions(broker.bootstrap, topic)
            consumer.assign(tps)
            tansu.wait_less_when_idle(consumer)
            fetcher = consumer._fetcher
            assert isinstance(fetcher, tansu.TansuFetcher)
            deadline = time.monotonic() + tansu.FETCH_IDLE_AFTER_S + 5
            while fetcher._fetch_max_wait_ms < tansu.FETCH_IDLE_WAIT_MS:
                assert time.monotonic() < deadline, f"still {fetcher._fetch_max_wait_ms} ms after idling"
                assert not await consumer.getmany(timeout_ms=100)
            idle_wait = fetcher._fetch_max_wait_ms
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
            await producer.start()
            try:
                sent = time.monotonic()
                await producer.send_and_wait(topic, b"after a quiet spell", partition=0)
            finally:
                await producer.stop()
            got = await consumer.getmany(timeout_ms=5000)
            delay = time.monotonic() - sent
            assert [m.value for ms in got.values() for m in ms] == [b"after a quiet spell"]
            return idle_wait, fetcher._fetch_max_wait_ms, delay, len(got)
        finally:
            await consumer.stop()

    idle_wait, after, delay, _ = asyncio.run(scenario())
    print(f"\nidle fetch wait {idle_wait} ms; first record after idling took {delay * 1000:.0f} ms; then {after} ms")
    assert idle_wait == tansu.FETCH_IDLE_WAIT_MS
    assert after == tansu.FETCH_WAIT_MS
    assert delay < 2 * tansu.FETCH_IDLE_WAIT_MS / 1000 + 0.5


BACKLOG = 20_000  # records of 1 kB over 8 partitions


def fill_backlog(broker: EmbeddedBroker) -> str:
    topic = f"backlog-{uuid.uuid4().hex[:8]}"
    broker.create_topics({topic: 8})

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=30)
        await producer.start()
        try:
            sent = [await producer.send(topic, b"x" * 1000, partition=i % 8) for i in range(BACKLOG)]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(produce())
    return topic


async def drain(bootstrap: str, topic: str, seconds: float, *, prepare: Callable[[AIOKafkaConsumer], None],
                **options: Any) -> tuple[int, float, list[tuple[int, int]]]:
    """(records read, seconds taken, each fetch request's (min bytes, max wait ms)) from the log start."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **options)
    await consumer.start()
    try:
        tps = await topic_partitions(bootstrap, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        prepare(consumer)
        fetches = counting_requests(consumer._client, FetchRequest)
        started, got = time.monotonic(), 0
        while got < BACKLOG and time.monotonic() - started < seconds:
            got += sum(len(records) for records in (await consumer.getmany(timeout_ms=200)).values())
        return got, time.monotonic() - started, [(fetch._min_bytes, fetch._max_wait_ms) for fetch in fetches]
    finally:
        await consumer.stop()


def test_a_fetch_held_for_bytes_comes_back_empty_while_a_backlog_waits(broker: EmbeddedBroker) -> None:
    """h., the fault: Tansu answers a fetch whose minimum bytes it cannot meet
    with no records, fetch after fetch, though a backlog waits (the stall of
    the pipeline under load; a broker that answers with what it has at the
    end of the wait, as Kafka does, fails this test: then h. can go).

    How much gets through varies with the broker's speed (none of 20,000 in
    most runs, a quarter in one CI run), so the test holds only what Kafka's
    answer rules out: a backlog of 20 MB, up to 8 MB a fetch, still not read
    after ten fetches or more. And the fault does not show every time (one
    fresh-clone run read all 20,000 in 74 fetches): up to three reads of the
    same backlog, of which one must fall short; Kafka reads it all in each."""
    topic = fill_backlog(broker)
    shortest = BACKLOG
    for _ in range(3):
        got, seconds, asked = asyncio.run(drain(broker.bootstrap, topic, 3.0, prepare=lambda consumer: None,
                                                fetch_min_bytes=50 * 1024 * 1024, fetch_max_wait_ms=30))
        print(f"\nheld for 50 MB, 30 ms wait: {got} of {BACKLOG} records in {seconds:.1f} s, {len(asked)} fetches")
        assert len(asked) >= 10
        shortest = min(shortest, got)
        if shortest < BACKLOG:
            break
    assert shortest < BACKLOG


def test_a_busy_tansu_fetcher_spaces_its_fetches_itself_and_takes_a_backlog(broker: EmbeddedBroker) -> None:
    """h.: spaced for the load, every fetch still asks for one byte, and the
    fetches go a spacing apart."""
    topic = fill_backlog(broker)
    linger = 0.05

    def prepare(consumer: AIOKafkaConsumer) -> None:
        kafka_transport.space_fetches(consumer, linger)
        tansu.wait_less_when_idle(consumer)

    got, seconds, asked = asyncio.run(drain(broker.bootstrap, topic, 30.0, prepare=prepare,
                                            fetch_max_wait_ms=tansu.FETCH_WAIT_MS))
    print(f"\nspaced by the fetcher: {got} of {BACKLOG} records in {seconds:.2f} s, {len(asked)} fetches")
    assert got == BACKLOG
    assert {min_bytes for min_bytes, _ in asked} == {1}
    # the backlog counts as a load from the second fetch on: a linger apart at least
    assert len(asked) <= 2 + seconds / linger


def committed_offsets(bootstrap: str, group_id: str, topic: str) -> tuple[dict[int, int | None], dict[int, int]]:
    """(the group's committed offset, the end) per partition of ``topic``."""

    async def read() -> tuple[dict[int, int | None], dict[int, int]]:
        # a group id without a subscription: never joins, only asks the coordinator
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = await topic_partitions(bootstrap, topic)
            ends = await tansu.fetch_end_offsets(consumer, tps)
            return {tp.partition: await consumer.committed(tp) for tp in tps}, {tp.partition: ends[tp] for tp in tps}
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_graceful_stop_and_rebalance_commit_what_was_processed(
    broker: EmbeddedBroker, workers: Callable[..., Workers]
) -> None:
    """No periodic commit: a graceful stop, then the survivor's rebalance, commit everything processed.

    With a commit interval longer than the test, only two commits can cover
    the 400 messages: the stopped worker's final commit (``wait_empty`` on
    stop) and the survivor's commit when its partitions are revoked at the
    rebalance. Faust drops the revoked partitions' bookkeeping before that
    commit (see f. in ``streamapp.embedded.tansu``): the survivor then
    replayed its whole share (190 or 210 of 400, measured).
    """
    group = workers()
    no_periodic_commit = {"BROKER_COMMIT_INTERVAL": "120"}
    group.start("w1", **no_periodic_commit)
    group.start("w2", **no_periodic_commit)

    def split(state: dict[str, Any]) -> bool:
        return bool(state["recovered"] and state["assignment"] and len(state["assignment"]) < 4)

    group.wait("w1", split, timeout=45, what="a share of the partitions")
    group.wait("w2", split, timeout=45, what="a share of the partitions")

    messages = [(f"key-{i % 40}", b"v") for i in range(400)]
    produce(broker.bootstrap, group.topic, messages)
    deadline = time.monotonic() + 30
    while True:  # stop w2 as soon as everything is processed, before anything else can commit
        a, b = group.state("w1"), group.state("w2")
        if a is not None and b is not None and a["processed"] + b["processed"] >= 400:
            break
        assert time.monotonic() < deadline, f"not all 400 processed: {a!r} {b!r}"
        time.sleep(0.02)
    assert a["processed"] + b["processed"] == 400
    assert group.stop("w2") == 0

    committed, ends = committed_offsets(broker.bootstrap, group.app_id, group.topic)
    print(f"\nafter w2's graceful stop: committed {committed}, ends {ends} (w2 had {b['assignment']})")
    assert {p: committed[p] for p in b["assignment"]} == {p: ends[p] for p in b["assignment"]}, "stop commit"

    deadline = time.monotonic() + 20  # w1 rebalances once it sees w2 gone
    while committed != ends and time.monotonic() < deadline:
        time.sleep(0.2)
        committed, ends = committed_offsets(broker.bootstrap, group.app_id, group.topic)
    print(f"after w1's rebalance: committed {committed} (w1 had {a['assignment']})")
    assert committed == ends, "the survivor did not commit its processed offsets when its partitions were revoked"

    more = [(f"key-{i % 40}", b"v") for i in range(40)]
    produce(broker.bootstrap, group.topic, more)
    expected = dict(Counter(key for key, _ in messages + more))
    state = group.wait(
        "w1",
        lambda s: len(s["assignment"]) == 4 and sum(s["counts"].values()) >= 440,
        timeout=30,
        what="the takeover and the new messages",
    )
    # a replay runs ahead of the new messages in each partition: counted by now
    replayed = state["processed"] - a["processed"] - len(more)
    print(f"w1 processed {state['processed']} in all: {replayed} replayed")
    assert replayed == 0
    assert state["counts"] == expected


# -- d. transactions ------------------------------------------------------------------------


def test_exactly_once_is_refused_with_a_clear_message(broker: EmbeddedBroker, workers: Callable[..., Workers]) -> None:
    group = workers()
    proc = group.start("w1", PROCESSING_GUARANTEE="exactly_once")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "not available on the embedded Tansu broker" not in proc.log_tail(200):
        time.sleep(0.1)
    log = proc.log_tail(200)
    assert "processing_guarantee='exactly_once' is not available on the embedded Tansu broker" in log, log
    assert "at_least_once" in log


# -- e. fetch wait ---------------------------------------------------------------------------


def test_skipped_offsets_are_never_marked_processed() -> None:
    """The mechanism of the loss seen with a short fetch wait, without a broker.

    After a rebalance Faust resumes the stream partitions, then seeks them to
    the committed offset and rewinds its read offset to it. Records fetched in
    between are delivered first, so the next record looks like a jump, and
    Faust marks the jump "processed" (``_add_gap``) while those records may
    still wait in the agent's queue; a commit then covers them, and the next
    rebalance drops the queue: lost. Here: committed 100, records 100..109
    delivered before the rewind, 100..102 processed, next record 110.
    """
    from faust.transport.consumer import Consumer as FaustConsumer
    from intervaltree import IntervalTree

    tp = TopicPartition("t", 0)
    for add_gap, expected in ((FaustConsumer._add_gap, 111), (tansu.TansuConsumer._add_gap, 103)):
        state = SimpleNamespace(
            _committed_offset=defaultdict(lambda: None, {tp: 100}),
            _gap=defaultdict(IntervalTree),
            _acked=defaultdict(list),
            _acked_index=defaultdict(set),
        )
        asyncio.run(add_gap(state, tp, 101, 110))  # as the fetch loop calls it
        for offset in (100, 101, 102):
            state._acked[tp].append(offset)
            state._acked_index[tp].add(offset)
        # successive commits (every commit interval): Faust reaches 111, past
        # 103..109 that no agent has processed yet
        commits = []
        while (offset := FaustConsumer._new_offset(state, tp)) is not None and len(commits) < 20:  # type: ignore[arg-type]
            commits.append(offset)
            state._committed_offset[tp] = offset
        assert max(commits) == expected, commits

    # the record at the committed offset itself was dropped: Faust commits past it
    for consumer, expected in ((FaustConsumer, 103), (tansu.TansuConsumer, None)):
        state = SimpleNamespace(
            _committed_offset=defaultdict(lambda: None, {tp: 100}),
            _gap=defaultdict(IntervalTree),
            _acked=defaultdict(list, {tp: [101, 102]}),
            _acked_index=defaultdict(set, {tp: {101, 102}}),
        )
        assert consumer._new_offset(state, tp) == expected  # type: ignore[arg-type]


def read_all(bootstrap: str, topic: str) -> list[tuple[bytes, int]]:
    """Every (value, timestamp ms) of ``topic`` so far."""

    async def read() -> list[tuple[bytes, int]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = await topic_partitions(bootstrap, topic)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await tansu.TansuConsumerThread._highwaters(SimpleNamespace(_ensure_consumer=lambda: consumer), tps)  # type: ignore[arg-type]
            records: list[tuple[bytes, int]] = []

            async def behind() -> bool:
                return any([await consumer.position(tp) < ends[tp] for tp in tps])

            while await behind():
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend((m.value, m.timestamp) for m in messages)
            return records
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_no_loss_over_rebalances_with_two_workers(broker: EmbeddedBroker, workers: Callable[..., Workers]) -> None:
    """Every message relayed across graceful restarts of two workers sharing a table.

    Runs with the embedded stack's fetch wait (``tansu.FETCH_WAIT_MS``); set
    ``TANSU_TEST_FETCH_WAIT_MS`` to try another (1500 is Faust's own).
    """
    group = workers(app="relay")
    out_topic = group.topic.replace("-in-", "-out-")
    broker.create_topics({out_topic: 4})
    env = {"RELAY_IN": group.topic, "RELAY_OUT": out_topic, "RELAY_APP_ID": group.app_id}
    if wait_ms := os.environ.get("TANSU_TEST_FETCH_WAIT_MS"):
        env[tansu.FETCH_WAIT_ENV] = wait_ms
    for name in ("w1", "w2"):
        group.start(name, **env)

    total, rate = 6000, 250
    messages = [(f"k{i % 97}", b"%d" % i) for i in range(total)]

    def send() -> None:
        async def paced() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
            await producer.start()
            try:
                started = time.monotonic()
                futures = []
                for i, (key, value) in enumerate(messages):
                    if stop_sending.is_set():  # the test failed: stop producing
                        break
                    futures.append(await producer.send(group.topic, key=key.encode(), value=value))
                    if i % 50 == 49:
                        await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.monotonic()))
                await asyncio.gather(*futures)
            finally:
                await producer.stop()

        asyncio.run(paced())

    def readies(name: str) -> int:
        return group.procs[name].log_path.read_text().count("Worker ready")

    def settled(before: dict[str, int]) -> bool:
        if any(readies(n) <= c for n, c in before.items()):
            return False
        states = [group.state(n) for n in before]
        if any(s is None or not s["recovered"] for s in states):
            return False
        held = [p for s in states for p in s["assignment"]]
        return sorted(held) == [0, 1, 2, 3]

    def settle(before: dict[str, int]) -> None:
        # every worker has finished a rebalance since ``before`` and the two
        # hold all partitions between them: stopping a member while another
        # joins left this broker's group without a leader (docs/DESIGN.md)
        deadline = time.monotonic() + 30
        while not settled(before):
            assert time.monotonic() < deadline, f"the group did not settle: {[group.state(n) for n in before]}"
            time.sleep(0.2)

    settle({"w1": 0, "w2": 0})
    stop_sending = threading.Event()
    sender = threading.Thread(target=send)
    sender.start()
    restarts = 0
    try:
        while sender.is_alive():  # graceful restarts, one worker at a time: two rebalances each
            name = ("w2", "w1")[restarts % 2]
            before = {n: readies(n) for n in ("w1", "w2")}
            group.stop(name)
            group.start(name, **env)
            restarts += 1
            settle(before)
    finally:
        stop_sending.set()
        sender.join()

    deadline = time.monotonic() + 90
    seen: set[int] = set()
    while time.monotonic() < deadline:
        records = read_all(broker.bootstrap, out_topic)
        seen = {int(value.split(b"@")[0]) for value, _ in records}
        if len(seen) == total:
            break
        time.sleep(2)
    skipped = sum(p.log_path.read_text().count("skipped by the fetch loop") for p in group.procs.values())
    latencies = sorted(ts - int(value.split(b"@")[1]) for value, ts in records) or [0]
    print(
        f"\nfetch wait {env.get(tansu.FETCH_WAIT_ENV, tansu.FETCH_WAIT_MS)} ms: {restarts} restarts ({2 * restarts} rebalances), {total} messages: {len(seen)} relayed, "
        f"{len(records) - len(seen)} duplicates; fetch-loop skips caught: {skipped}; "
        f"hop latency p50 {statistics.median(latencies):.0f} ms, p99 {latencies[int(0.99 * len(latencies))]:.0f} ms"
    )
    missing = sorted(set(range(total)) - seen)
    by_partition: dict[int, list[int]] = defaultdict(list)
    for i in missing:  # which input partition and offsets they were at
        key = messages[i][0].encode()
        partition = DefaultPartitioner()(key, [0, 1, 2, 3], [0, 1, 2, 3])
        offset = sum(
            1 for k, _ in messages[:i] if DefaultPartitioner()(k.encode(), [0, 1, 2, 3], [0, 1, 2, 3]) == partition
        )
        by_partition[partition].append(offset)
    summary = {p: (len(o), min(o), max(o)) for p, o in by_partition.items()}
    assert not missing, f"{len(missing)} messages lost (partition: count, first, last offset): {summary}"
