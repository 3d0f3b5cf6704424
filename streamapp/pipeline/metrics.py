"""The worker's Prometheus metrics: what each stage did, and how long it took.

Reads: calls from the agents (a stage's seconds, a batch's size, a dead
letter, a retry, an image counted for the first time under its digit or held
for review, work in flight) and,
when scraped, Faust's own monitor (each partition's end offset as the last
fetch saw it, and its committed offset) for the consumer lag. Writes: the
registry, served as Prometheus text at ``GET /metrics`` (views.py).

One registry per app, not the process-wide default: :func:`create_app` may
build several apps in one process. Names follow Prometheus' conventions
(``_total`` counters, ``_seconds`` histograms, base units).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

#: the stages timed per image; end_to_end runs from the worker receiving the
#: notification to the image counted
STAGES = ("s3_get", "transform", "batch_wait", "predict", "archive", "end_to_end")
#: where work can be in flight
IN_FLIGHT = ("preprocess", "predict", "archive")
DEPENDENCIES = ("s3", "predictor")

#: 1 ms .. 30 s: a stage of a healthy pipeline takes milliseconds, a stalled one seconds
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ConsumerLag(Collector):
    """``streamapp_consumer_lag``: per partition this worker consumes, the end
    offset minus the committed one, from Faust's monitor, read when scraped."""

    def __init__(self, app: Any, topics: Iterable[str]) -> None:
        self.app = app
        self.topics = frozenset(topics)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "streamapp_consumer_lag",
            "Messages not yet processed and committed, per partition this worker consumes "
            "(end offset as last fetched minus committed offset).",
            labels=["topic", "partition"],
        )
        monitor = self.app.monitor
        for tp in sorted(self.app.assignor.assigned_actives()):
            if tp.topic not in self.topics or tp not in monitor.tp_end_offsets:
                continue
            done = monitor.tp_committed_offsets.get(tp)
            if done is None and tp in monitor.tp_read_offsets:
                done = monitor.tp_read_offsets[tp] + 1
            lag = max(0, monitor.tp_end_offsets[tp] - (done or 0))
            family.add_metric([tp.topic, str(tp.partition)], lag)
        yield family


class Metrics:
    """The worker's metrics; every label value the dashboards use exists from the start (at 0)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.images_counted = Counter(
            "streamapp_images_counted", "Images counted for the first time by this worker, per digit "
            "(a replayed or duplicated notification counts nothing; images held for review are "
            "streamapp_images_review_total).", ["digit"], registry=registry)
        self.images_review = Counter(
            "streamapp_images_review", "Images held for review (top probability under "
            "STREAMAPP_REVIEW_BELOW, or none) counted for the first time by this worker, per digit "
            "guessed; not in streamapp_images_counted_total.", ["digit"], registry=registry)
        self.stage_seconds = Histogram(
            "streamapp_stage_seconds", "Seconds an image spent in each stage: s3_get, transform, "
            "batch_wait, predict, archive, and end_to_end (notification received to counted).",
            ["stage"], buckets=_SECONDS, registry=registry)
        self.batch_size = Histogram(
            "streamapp_batch_size", "Images per predictor request.", buckets=_BATCH, registry=registry)
        self.dead_letters = Counter(
            "streamapp_dead_letters", "Inputs sent to the dead-letter topic, by stage and kind.",
            ["stage", "kind"], registry=registry)
        self.retries = Counter(
            "streamapp_retries", "Retries of a call to a dependency that was down (s3, predictor).",
            ["dependency"], registry=registry)
        self.in_flight = Gauge(
            "streamapp_in_flight", "Work in progress now: downloads and transforms (preprocess), "
            "predictor requests (predict), copies to the archive (archive).", ["stage"], registry=registry)
        # every label value made once: each exists (at 0) from the start, and
        # the agents' per-image updates skip labels()'s lookup and lock
        self.counted = [self.images_counted.labels(str(digit)) for digit in range(10)]
        self.reviewed = [self.images_review.labels(str(digit)) for digit in range(10)]
        self.stage = {stage: self.stage_seconds.labels(stage) for stage in STAGES}
        self.busy = {stage: self.in_flight.labels(stage) for stage in IN_FLIGHT}
        self.retried = {dependency: self.retries.labels(dependency) for dependency in DEPENDENCIES}

    def watch_lag(self, app: Any, topics: Iterable[str]) -> None:
        self.registry.register(ConsumerLag(app, topics))

    def observe(self, timings: dict[str, float]) -> None:
        for stage, seconds in timings.items():
            if stage in self.stage:
                self.stage[stage].observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
