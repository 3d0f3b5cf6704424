"""GET /metrics on a running worker: the metrics move as images flow, and agree with the counts."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamapp.embedded.notifications import minio_notification
from streamapp.pipeline.metrics import STAGES
from tests.support import SETTLE, digit_counts, produce, tricky_copies, upload_files, wait_counts, wait_for

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(stack) -> tuple[str, Samples]:
    with urllib.request.urlopen(stack.web_url() + "/metrics", timeout=5) as response:  # noqa: S310 (loopback)
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return text, {(s.name, tuple(sorted(s.labels.items()))): s.value
                  for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(value for (n, have), value in samples.items()
               if n == name and all((k, v) in have for k, v in labels.items()))


def test_metrics_move_with_the_images_and_the_counter_equals_the_counted_images(stack, samples, tmp_path):
    text, before = scrape(stack)
    for name in ("streamapp_images_counted_total", "streamapp_stage_seconds", "streamapp_batch_size",
                 "streamapp_dead_letters_total", "streamapp_retries_total", "streamapp_consumer_lag", "streamapp_in_flight"):
        assert f"# HELP {name} " in text, name
    counts_before = digit_counts(stack)
    labels = tricky_copies(samples[:20], tmp_path, folder="metrics")
    uploaded = upload_files(stack, [tmp_path], prefix="metrics/")
    expected = counts_before + Counter(labels.values())
    wait_counts(stack, expected)
    # the store delivers every notification again: counted nothing twice
    produce(stack, stack.settings.events_topic, [minio_notification(u.ref) for u in uploaded])
    wait_for(lambda: total(scrape(stack)[1], "streamapp_stage_seconds_count", stage="end_to_end")
             >= total(before, "streamapp_stage_seconds_count", stage="end_to_end") + 2 * len(labels),
             timeout=SETTLE, what="the replayed notifications to go through")
    _, after = scrape(stack)
    assert digit_counts(stack) == expected

    # images_counted_total: per digit, exactly the images the counts gained
    for digit in range(10):
        gained = (total(after, "streamapp_images_counted_total", digit=str(digit))
                  - total(before, "streamapp_images_counted_total", digit=str(digit)))
        assert gained == expected[digit] - counts_before[digit], digit
    # every stage timed once per image that went through (twice: the replay)
    for stage in STAGES:
        gained = (total(after, "streamapp_stage_seconds_count", stage=stage)
                  - total(before, "streamapp_stage_seconds_count", stage=stage))
        assert gained == 2 * len(labels), stage
    assert total(after, "streamapp_batch_size_sum") - total(before, "streamapp_batch_size_sum") == 2 * len(labels)
    # nothing in flight once all is counted, and the lag of every partition drains to 0
    assert total(after, "streamapp_in_flight") == 0
    topics = {stack.settings.events_topic, stack.settings.tensors_topic, stack.settings.labeled_topic}
    lags = wait_for(lambda: (lag := {labels_: v for (n, labels_), v in scrape(stack)[1].items()
                                     if n == "streamapp_consumer_lag"}) and not any(lag.values()) and lag,
                    timeout=SETTLE, what="the consumer lag to drain")
    assert {dict(labels_)["topic"] for labels_ in lags} >= topics


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_nothing_on_the_web_server_writes_or_deletes(stack, method):
    for path in ("/", "/digits/", "/stats/", "/metrics", "/api/dashboard/", "/internal/recent/",
                 "/internal/counts/images/?partitions=0"):
        request = urllib.request.Request(stack.web_url() + path, data=b"{}", method=method)  # noqa: S310 (loopback)
        try:
            urllib.request.urlopen(request, timeout=5)  # noqa: S310 (loopback)
        except urllib.error.HTTPError as exc:
            assert exc.code == 405, (method, path, exc.code)
        else:
            raise AssertionError(f"{method} {path} was accepted")
