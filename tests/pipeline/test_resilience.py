"""Dependencies going down, workers restarting and scaling: nothing lost, counts exact.

These tests stop and start the real processes of a stack (predictor, S3
server, worker): the module has a stack of its own, so no other test sees
its outages.
"""

from __future__ import annotations

import time
import urllib.request
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest

from streamapp.embedded.notifications import minio_notification
from streamapp.embedded.stack import Stack
from streamapp.pipeline.records import ObjectRef, TensorRecord
from tests.support import (
    SETTLE,
    digit_counts,
    http_json,
    produce,
    read_topic,
    running_stack,
    start_stack,
    tricky_copies,
    upload_files,
    wait_counts,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """This module's own stack: its tests take the stack's processes down."""
    with running_stack(tmp_path_factory.mktemp("resilience-stack")) as stack:
        yield stack


def dead_letters_under(stack, prefix: str) -> list[dict]:
    return [
        r
        for r in read_topic(stack, stack.settings.dead_letter_topic)
        if (r.get("image") or {}).get("key", "").startswith(prefix)
    ]


def wait_for_retries(stack, what: str, since: int) -> None:
    """Until worker 0's log, past offset ``since``, shows ``what`` failing a third time (backing off)."""

    def retried() -> bool:
        text = stack.workers[0].log_path.read_text(errors="replace")[since:]
        return any(what in line and "failed (attempt 3)" in line for line in text.splitlines())

    wait_for(retried, timeout=60, what=f"worker 0 retrying {what}")


def log_size(stack) -> int:
    return len(stack.workers[0].log_path.read_text(errors="replace"))


def test_predictor_down_then_back_loses_nothing(stack, samples, tmp_path):
    labels = tricky_copies(samples[:10], tmp_path, folder="pd")
    before = digit_counts(stack)
    since = log_size(stack)
    stack.stop_predictor()
    try:
        upload_files(stack, [tmp_path], prefix="predictor-down/")
        wait_for_retries(stack, "predict", since)
        assert digit_counts(stack) == before
    finally:
        stack.start_predictor()
    wait_counts(stack, before + Counter(labels.values()))
    assert not dead_letters_under(stack, "predictor-down/")


def test_s3_down_then_back_loses_nothing(stack, samples, tmp_path):
    labels = tricky_copies(samples[:10], tmp_path, folder="sd")
    before = digit_counts(stack)
    uploaded = upload_files(stack, [tmp_path], prefix="s3-down/", notify=False)
    since = log_size(stack)
    stack.stop_s3()
    try:
        produce(stack, stack.settings.events_topic, [minio_notification(u.ref) for u in uploaded])
        wait_for_retries(stack, "GetObject", since)
        assert digit_counts(stack) == before
    finally:
        stack.start_s3()
    wait_counts(stack, before + Counter(labels.values()))
    assert not dead_letters_under(stack, "s3-down/")


def test_restarted_worker_recovers_counts_exactly(stack, samples, tmp_path):
    labels = tricky_copies(samples[:5], tmp_path, folder="before-restart")
    before = digit_counts(stack)
    upload_files(stack, [tmp_path / "before-restart"], prefix="before-restart/")
    counts = wait_counts(stack, before + Counter(labels.values()))
    assert sum(counts.values()) > 0
    stack.stop_worker(0)
    started = time.monotonic()
    stack.start_worker(0)
    stack.wait_worker_ready(0)
    print(f"worker restart to web ready: {time.monotonic() - started:.1f}s")
    assert digit_counts(stack) == counts
    # and it goes on counting
    labels = tricky_copies(samples[:5], tmp_path, folder="after-restart")
    upload_files(stack, [tmp_path / "after-restart"], prefix="after-restart/")
    wait_counts(stack, counts + Counter(labels.values()))


def test_two_workers_share_partitions_and_count_exactly(tmp_path_factory, samples):
    """Scale out and in while images flow: every image counted once, on both workers."""
    stack = start_stack(tmp_path_factory.mktemp("two-workers"), workers=1, partitions=4)
    try:
        copies = 8
        labels: Counter = Counter()
        batches = []
        for round_ in range(copies):
            folder = tmp_path_factory.mktemp(f"round{round_}")
            batch_labels = tricky_copies(samples, folder, folder=f"r{round_}")
            labels.update(batch_labels.values())
            batches.append(folder)
        upload_files(stack, batches[:2], prefix="scale/")
        stack.start_worker(1)  # rebalance while the first images are in flight
        upload_files(stack, batches[2:5], prefix="scale/")
        stack.wait_worker_ready(1)
        upload_files(stack, batches[5:], prefix="scale/")
        stack.stop_worker(0)  # and another one: worker 1 takes everything over
        try:
            wait_counts(stack, labels, worker=1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{takeover_report(stack, labels)}") from None
        stack.start_worker(0)
        stack.wait_worker_ready(0)
        # both workers answer for all partitions (each asks the other for its own)
        assert wait_counts(stack, labels, worker=0) == labels
        assert digit_counts(stack, 1) == labels
        # the dashboard's data, from either worker: both workers, their partitions disjoint and complete
        for index in (0, 1):
            dashboard = wait_for(lambda index=index: (d := http_json(stack.web_url(index) + "/api/dashboard/"))
                                 and len(d["workers"]) == 2 and all(w["answered"] for w in d["workers"]) and d,
                                 timeout=SETTLE, what="both workers on the dashboard")
            held = [p for w in dashboard["workers"] for p in w["partitions"]]
            assert sorted(held) == [0, 1, 2, 3], dashboard["workers"]
            assert dashboard["images"]  # the latest images, whichever worker classified them
        stats = [http_json(stack.web_url(i) + "/stats/")["worker"]["counters"] for i in (0, 1)]
        print("per-worker counters after the rebalances:", stats)
        assert not dead_letters_under(stack, "scale/")
    finally:
        stack.stop()


def takeover_report(stack, labels: Counter) -> str:
    """Where the images of a failed takeover got to: the intermediate topics, worker 1's counters and log."""
    settings = stack.settings
    lines = [f"expected {sum(labels.values())} images; worker 1 counts {sum(digit_counts(stack, 1).values())}"]
    for topic in (settings.tensors_topic, settings.labeled_topic):
        keys = {(r["image"]["key"], r["image"].get("etag")) for r in read_topic(stack, topic)}
        lines.append(f"{topic}: {len(keys)} distinct images")
    lines.append(f"worker 1 counters: {http_json(stack.web_url(1) + '/stats/')['worker']['counters']}")
    lines.append(stack.workers[1].log_tail(60))
    return "\n".join(lines)



def test_an_input_the_predictor_fails_on_is_dead_lettered_while_the_rest_flows(tmp_path, samples):
    """The real model server, made to answer 500 for one input while it answers every other."""
    stack = start_stack(tmp_path / "stack", predictor_args=["--fail-on-value", "0.5"],
                        STREAMAPP_PREDICTOR_MAX_FAILURES="3", STREAMAPP_RETRY_MAX="0.5")
    try:
        poison = ObjectRef(bucket=stack.config.input_bucket, key="poison/all-grey.png", etag="p0150")
        record = TensorRecord.from_array(poison, np.full((28, 28), 0.5, dtype=np.float32), timings={},
                                         received_at=time.time())
        # a tensor whose batch the predictor fails on, first in the partition's queue
        produce(stack, stack.settings.tensors_topic, [(poison.path.encode(), record.dumps())])
        labels = tricky_copies(samples[:12], tmp_path, folder="around-poison")
        upload_files(stack, [tmp_path / "around-poison"], prefix="poison/")
        wait_counts(stack, Counter(labels.values()))

        def poison_dead_letter():
            return [r for r in read_topic(stack, stack.settings.dead_letter_topic)
                    if (r.get("image") or {}).get("key") == poison.key]

        (dead,) = wait_for(poison_dead_letter, timeout=60, what="the poison tensor's dead letter")
        assert dead["kind"] == "predictor_failed" and dead["stage"] == "inference"
        assert "answered 500" in dead["reason"] and "answered a blank image" in dead["reason"]
        assert len(dead_letters_under(stack, "poison/")) == 1  # only the poison, none of the images around it
    finally:
        stack.stop()


def test_wrong_credentials_are_waited_for_not_dead_lettered(tmp_path, samples):
    """S3 refusing every request (403 everywhere, HeadBucket too) is S3's fault for the
    worker: nothing is dead-lettered or counted until the credentials are right."""
    wrong = {"AWS_SECRET_ACCESS_KEY": "x" * 40}  # any secret but the server's
    stack = start_stack(tmp_path / "stack", **wrong, STREAMAPP_RETRY_MAX="0.5", STREAMAPP_S3_MAX_DENIALS="2")
    try:
        labels = tricky_copies(samples[:8], tmp_path, folder="denied")
        upload_files(stack, [tmp_path / "denied"], prefix="denied/")  # the uploader has the right secret

        def retries() -> float:
            text = urllib.request.urlopen(stack.web_url() + "/metrics", timeout=5).read().decode()  # noqa: S310
            return sum(float(line.split()[-1]) for line in text.splitlines()
                       if line.startswith('streamapp_retries_total{dependency="s3"}'))

        # many more refusals than S3_MAX_DENIALS, and still nothing given up on
        wait_for(lambda: retries() >= 20, timeout=60, what="the worker to keep retrying")
        assert not dead_letters_under(stack, "denied/")
        assert sum(digit_counts(stack).values()) == 0
        # the right secret: everything flows, nothing was lost
        stack.stop_worker(0)
        stack.config.worker_settings.pop("AWS_SECRET_ACCESS_KEY")
        stack.start_worker(0)
        stack.wait_worker_ready(0)
        wait_counts(stack, Counter(labels.values()))
        assert not dead_letters_under(stack, "denied/")
    finally:
        stack.stop()
