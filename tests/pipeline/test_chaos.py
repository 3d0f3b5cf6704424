"""Counts stay exact through kill -9, outages, duplicates and recovery.

The operator's run, as a test: images pre-uploaded, their notifications
published at a steady rate (some twice, as a store's retry would), two
workers on 8 partitions, each killed -9 and restarted, the predictor and S3
down in between (and the same with one worker, killed twice, and with
three, of which two are killed). Then every
image must be archived under its digit and counted exactly once, by every
worker alike, within seconds of the stream draining. ``STREAMAPP_CHAOS_IMAGES`` and ``STREAMAPP_CHAOS_RATE`` scale it.
And a worker killed -9 while it recovers its tables restarts to exact counts.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from streamapp.embedded.notifications import minio_notification
from streamapp.embedded.preload import changelog_topic, preload_counted
from tests.support import (
    counts_if_ready,
    http_json,
    list_keys,
    read_topic,
    start_stack,
    tricky_copies,
    upload_files,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

IMAGES = int(os.environ.get("STREAMAPP_CHAOS_IMAGES", "2000"))
RATE = float(os.environ.get("STREAMAPP_CHAOS_RATE", "30"))
DUPLICATES = 0.05
#: (seconds after the first notification, what happens), scaled to the run's length
FAULTS = [
    (8, "kill worker 1"), (11, "start worker 1"),
    (22, "stop predictor"), (32, "start predictor"),
    (42, "stop s3"), (47, "start s3"),
    (55, "kill worker 0"), (58, "start worker 0"),
]
#: after the last notification: how long the workers get to drain and agree
SETTLE = 180


def copies(samples: list[Path], dest: Path, n: int) -> dict[str, int]:
    """``n`` copies of the samples under distinct keys: {relative key: label}."""
    labels: dict[str, int] = {}
    round_ = 0
    while len(labels) < n:
        batch = tricky_copies(samples, dest, folder=f"c{round_} ü+%")
        labels.update(dict(list(batch.items())[: n - len(labels)]))
        round_ += 1
    for path in dest.rglob("*"):  # the extra copies of the last round
        if path.is_file() and str(path.relative_to(dest)) not in labels:
            path.unlink()
    return labels


def act(stack, action: str) -> None:
    verb, *what = action.split()
    if what[0] == "worker":
        index = int(what[1])
        if verb == "kill":
            stack.workers[index].signal(signal.SIGKILL)
            stack.workers[index].proc.wait(10)
        else:
            stack.start_worker(index)
    elif what[0] == "predictor":
        stack.stop_predictor() if verb == "stop" else stack.start_predictor()
    elif verb == "stop":
        stack.stop_s3()
    else:
        stack.start_s3()


async def publish_with_faults(stack, notifications: list[tuple[bytes, bytes]], schedule: list[tuple[float, str]]) -> list[str]:
    """Publish at RATE while the faults happen on schedule; return what happened when."""
    done: list[str] = []
    producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap, linger_ms=5)
    await producer.start()
    started = time.monotonic()
    scale = len(notifications) / RATE / 70  # the schedule is for a 70 s run
    faults = sorted((at * scale, action) for at, action in schedule)
    try:
        for index, (key, value) in enumerate(notifications):
            while faults and time.monotonic() - started >= faults[0][0]:
                _at, action = faults.pop(0)
                await asyncio.to_thread(act, stack, action)
                done.append(f"{time.monotonic() - started:5.1f}s {action}")
            await producer.send(stack.settings.events_topic, key=key, value=value)
            await asyncio.sleep(max(0.0, started + (index + 1) / RATE - time.monotonic()))
        for _at, action in faults:
            await asyncio.to_thread(act, stack, action)
            done.append(f"{time.monotonic() - started:5.1f}s {action} (after the last notification)")
        await producer.flush()
    finally:
        await producer.stop()
    return done


@pytest.mark.parametrize("workers", [2, 1, 3])
def test_counts_exact_through_kills_outages_and_duplicates(tmp_path_factory, samples, workers):
    stack = start_stack(tmp_path_factory.mktemp("chaos"), workers=workers, partitions=8)
    try:
        folder = tmp_path_factory.mktemp("chaos-images")
        labels = copies(samples, folder, IMAGES)
        uploaded = upload_files(stack, [folder], prefix="chaos/", notify=False)
        assert len(uploaded) == IMAGES
        notifications = [minio_notification(u.ref) for u in uploaded]
        rng = random.Random(11)  # noqa: S311 (a reproducible schedule, not a secret)
        for _ in range(int(IMAGES * DUPLICATES)):  # a store's retries, somewhat later
            position = rng.randrange(len(notifications))
            notifications.insert(min(len(notifications), position + rng.randrange(1, 200)), notifications[position])
        # with one worker, both kills are of worker 0 (it restarts on its own state)
        faults = [(at, action.replace("worker 1", "worker 0") if workers == 1 else action) for at, action in FAULTS]
        timeline = asyncio.run(publish_with_faults(stack, notifications, faults))
        expected = Counter(labels.values())
        drained = time.monotonic()

        def all_exact():
            counts = [counts_if_ready(stack, i) for i in range(workers)]
            return all(c == expected for c in counts) and counts

        try:
            wait_for(all_exact, timeout=SETTLE, what=f"every worker to count {dict(expected)}", interval=0.5)
        except AssertionError as exc:
            counts = [counts_if_ready(stack, i) for i in range(workers)]
            logs = "\n".join(f"worker {i} log:\n{stack.workers[i].log_tail(40)}" for i in range(workers))
            raise AssertionError(f"{exc}\ntimeline: {timeline}\ncounts: {counts}\n{logs}") from None
        print(f"{workers} worker(s), {len(notifications)} notifications, faults: {timeline}; "
              f"all exact {time.monotonic() - drained:.1f}s after the last notification")
        if workers > 1:
            # every standby replica holds what its active holds (none missed a record)
            try:
                wait_for(lambda: standbys_match(stack), timeout=30, what="standby replicas to match their actives")
            except AssertionError as exc:
                detail = {i: {r: replica_counts(stack, i, r) for r in ("active", "standby")} for i in stack.workers}
                raise AssertionError(f"{exc}\n{detail}") from None
        # archived exactly where the digit says, every image, nothing else
        archived = list_keys(stack, stack.settings.archive_bucket)
        wanted = {f"{label}/chaos/{key}" for key, label in labels.items()}
        assert {k for k in archived if "/chaos/" in k} == wanted
        dead = [r for r in read_topic(stack, stack.settings.dead_letter_topic)
                if (r.get("image") or {}).get("key", "").startswith("chaos/")]
        assert not dead, dead[:3]
    finally:
        stack.stop()


def replica_counts(stack, worker: int, replica: str) -> dict:
    query = f"?partitions={','.join(map(str, range(8)))}&replica={replica}"
    return http_json(stack.web_url(worker) + "/internal/counts/images/" + query)["partitions"]


def standbys_match(stack) -> bool:
    workers = sorted(stack.workers)
    actives = {p: c for i in workers for p, c in replica_counts(stack, i, "active").items()}
    standbys = [replica_counts(stack, i, "standby") for i in workers]
    held = [p for s in standbys for p in s]
    return len(actives) == 8 and len(held) == 8 and all(actives[p] == s[p] for s in standbys for p in s)


def test_worker_killed_while_recovering_restarts_to_exact_counts(tmp_path):
    """A worker killed -9 mid-restore resumes from what it stored and ends exact."""
    stack = start_stack(tmp_path, workers=0, partitions=8)
    entries = 600_000
    try:
        topic = changelog_topic(stack.settings.app_id)
        stack.broker.create_topics({topic: 8})
        expected = asyncio.run(preload_counted(stack.broker.bootstrap, topic, partitions=8, count=entries))
        worker = stack.start_worker(0)

        def log_lines(pattern: str) -> list[str]:
            worker.check()
            return re.findall(pattern, worker.log_path.read_text(errors="replace"))

        wait_for(lambda: log_lines(r"restoring: \d+ records so far"), timeout=120,
                 what="worker 0 to be restoring its table", interval=0.05)
        assert counts_if_ready(stack, 0) is None  # not serving yet: killed mid-restore
        worker.signal(signal.SIGKILL)
        worker.proc.wait(10)
        killed_at = len(worker.log_path.read_text(errors="replace"))
        worker = stack.start_worker(0)
        wait_for(lambda: counts_if_ready(stack, 0) == expected, timeout=240, what=f"counts {dict(expected)}")
        # the restart read only what the killed worker had not stored
        after = worker.log_path.read_text(errors="replace")[killed_at:]
        (restored,) = [int(n) for n in re.findall(r"restored (\d+) records", after)]
        assert 0 < restored < entries
    finally:
        stack.stop()
