"""The topology, in the order data flows.

    s3-events (raw notification JSON, keyed bucket/key)
      -> preprocess: parse, GetObject, decode + normalize      -> tensors
      -> infer: batches of tensors -> one predictor request    -> labeled
      -> archive: server-side copy to <prefix><digit>/<key> (or, with
         STREAMAPP_REVIEW_BELOW, an unsure image to <review prefix><digit>/<key>),
         then images[identity] = {digit, confidence[, review]}
         (partitioned table)                                    -> GET /digits/, /stats/
    any input that cannot be processed                         -> dead-letters
      -> tally_dead_letters: dead_letters[source] = kind       -> GET /stats/

Delivery is at least once: an event is acked (its offset committable) only
after everything it produced has been sent, and Faust flushes the producer
before it commits. Rebalances replay what was processed since the last commit,
so every sink is idempotent: the archive rewrites the same key, and the archive agent
*sets* a key per image version instead of incrementing a counter, so a replay
cannot count an image twice. Counts per digit, and apart from them per digit
held for review, are derived from that set.

Per-event data lives in local variables and records only; the agents share
nothing mutable but the Faust tables, which only the archive and tally agents write, and
the worker's counters. The archive agent writes the images table itself:
the labeled topic is partitioned like the table, and a hop of its own would
cost a produce, a fetch and a record per image (docs/BENCHMARKS.md).
:class:`Pipeline` builds all of it on the app it is
given (:func:`streamapp.app.create_app`): nothing here exists before an app
does.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from faust.types import AppT, EventT, StreamT

from streamapp.errors import (
    BadInput,
    InvalidEvent,
    ObjectAccessDenied,
    PredictorFailed,
    PredictorRejected,
    PredictorUnavailable,
    StorageUnavailable,
)
from streamapp.imaging.tensor import transform
from streamapp.kafka.streams import BatchingStream
from streamapp.pipeline.batching import BatchPolicy
from streamapp.pipeline.events import Invalid, Skipped, check_source, parse_notification
from streamapp.pipeline.metrics import Metrics
from streamapp.pipeline.recent import Recent
from streamapp.pipeline.records import DeadLetter, LabeledRecord, ObjectRef, TensorRecord, top_confidence
from streamapp.pipeline.retry import retry_until_done
from streamapp.pipeline.state import image_entry
from streamapp.pipeline.storage import archive_destination, held_for_review

log = logging.getLogger(__name__)

T = TypeVar("T")

#: how much of an unparseable notification a dead letter keeps
_MAX_EVENT_TEXT = 64 * 1024

#: the input that tells "the predictor fails on this batch" from "the predictor fails"
_BLANK = np.zeros((1, 28, 28), dtype=np.float32)

class Pipeline:
    """The topology on one app: its topics, tables, agents and counters."""

    def __init__(self, app: AppT) -> None:
        self.app = app
        self.settings = settings = app.settings  # type: ignore[attr-defined]

        # -- topics ---------------------------------------------------------------
        # Keys are "bucket/key" (raw UTF-8) everywhere, so every record about
        # one object lands on the same partition number of each topic.
        self.events_topic = app.topic(settings.events_topic, key_serializer="raw", value_type=bytes,
                                      value_serializer="raw")
        self.tensors_topic = app.topic(settings.tensors_topic, key_serializer="raw", value_type=TensorRecord)
        self.labeled_topic = app.topic(settings.labeled_topic, key_serializer="raw", value_type=LabeledRecord)
        self.dead_letter_topic = app.topic(settings.dead_letter_topic, key_serializer="raw", value_type=DeadLetter)

        # -- tables ---------------------------------------------------------------
        # Partitioned like the topics they count (each worker holds only its
        # partitions), on disk in the worker's data dir, each partition's
        # counts kept beside its entries (streamapp.kafka.store). A standby
        # replica of every partition on another worker takes over or answers
        # for a dead owner; it applies every changelog record as it comes
        # (standby_buffer_size=1) so it trails by none.
        def counted(name: str, value_type: type | None, help: str) -> Any:
            return app.Table(name, key_type=str, value_type=value_type, standby_buffer_size=1, help=help)

        # values: image_entry() dicts, or bare digits written before confidences
        # were kept (value_type None: JSON as it is, both load)
        self.images = counted("images", None, "image version (bucket/key@etag) -> {digit, confidence[, review]}: "
                                              "the set the counts derive from")
        self.dead_letters = counted("dead-letters", str, "failed input (topic:partition:offset:index:stage) -> error kind")

        # Per-worker, in-memory, for /stats/: how this process spent its time.
        # Only ever incremented by whole numbers from one event loop thread.
        self.stats: Counter[str] = Counter()
        # Per-worker Prometheus metrics, served at /metrics
        self.metrics = Metrics()
        # The latest images, dead letters and timings, for the dashboard
        self.recent = Recent()
        self.metrics.watch_lag(app, (settings.events_topic, settings.tensors_topic, settings.labeled_topic,
                                     settings.dead_letter_topic))
        self.policy = BatchPolicy(settings.batch_max_size, settings.batch_max_delay)

        # -- the agents, in the order data flows ------------------------------------
        agent = app.agent
        agent(self.events_topic, name="streamapp.pipeline.agents.preprocess",
              concurrency=settings.preprocess_concurrency)(self.preprocess)
        agent(self.tensors_topic, name="streamapp.pipeline.agents.infer")(self.infer)
        agent(self.labeled_topic, name="streamapp.pipeline.agents.archive",
              concurrency=settings.archive_concurrency)(self.archive)
        agent(self.dead_letter_topic, name="streamapp.pipeline.agents.tally_dead_letters")(self.tally_dead_letters)

    async def send_dead_letter(self, stage: str, error: BadInput, event: EventT, *, image: ObjectRef | None = None,
                               raw: bytes | None = None, index: int = 0) -> None:
        """Write one dead-letter record: what failed, where it sits in Kafka, and why."""
        message = event.message
        text = None
        if raw is not None:
            text = raw[:_MAX_EVENT_TEXT].decode("utf-8", errors="replace")
        record = DeadLetter.now(
            stage=stage,
            kind=error.kind,
            reason=str(error),
            image=image,
            event=text,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            index=index,
        )
        self.stats[f"dead_letter.{stage}.{error.kind}"] += 1
        self.metrics.dead_letters.labels(stage, error.kind).inc()
        self.recent.dead_letter(stage=stage, kind=error.kind, reason=str(error),
                                path=image.url if image else None)
        # the reason names untrusted keys and text: quoted, so it cannot forge log lines
        log.warning("dead letter from %s (%s): %r", stage, error.kind, str(error))
        await self.dead_letter_topic.send(key=image.path if image else None, value=record)


    # -- 1. events -> preprocess -> tensors ----------------------------------------


    async def s3_call(self, call: Callable[[], Awaitable[T]], *, what: str, bucket: str) -> T:
        """An S3 call on one object, retried while S3 is down.

        S3 refusing (403) this object while it answers HeadBucket for its
        bucket is about the object (a policy, a KMS key, a key the server
        cannot sign), not S3: after ``s3_max_denials`` such answers this
        raises ``ObjectAccessDenied``. Refused everywhere (wrong credentials):
        retried without end.
        """
        denials = 0

        async def attempt() -> T:
            nonlocal denials
            try:
                return await call()
            except StorageUnavailable as exc:
                if exc.status == 403 and await self.app.storage.bucket_answers(bucket):
                    denials += 1
                    if denials >= self.settings.s3_max_denials:
                        raise ObjectAccessDenied(f"{exc} ({denials} times, while S3 answered for bucket "
                                                 f"{bucket!r})") from exc
                raise

        return await retry_until_done(attempt, what=what, initial=self.settings.retry_initial,
                                      maximum=self.settings.retry_max, on_retry=self.metrics.retried["s3"].inc)


    async def fetch_tensor(self, ref: ObjectRef, received_at: float) -> TensorRecord:
        """GetObject (retried while S3 is down) and normalize it off the event loop."""
        started = time.perf_counter()
        with self.metrics.busy["preprocess"].track_inprogress():
            data = await self.s3_call(lambda: self.app.storage.get(ref),
                                      what=f"GetObject {ref.url!r}", bucket=ref.bucket)
            fetched = time.perf_counter()
            tensor = await transform(data, mode=self.settings.transform, max_pixels=self.settings.max_pixels)
            done = time.perf_counter()
        timings = {"s3_get": fetched - started, "transform": done - fetched}
        return TensorRecord.from_array(ref, tensor, timings=timings, received_at=received_at)


    async def preprocess(self, stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            received_at = time.time()
            raw = event.value
            try:
                items = parse_notification(raw, archive_bucket=self.settings.archive_bucket,
                                           archive_prefix=self.settings.archive_prefix,
                                           review_prefix=self.settings.review_prefix_in_use)
            except InvalidEvent as exc:
                await self.send_dead_letter("events", exc, event, raw=raw)
                continue
            # items: every Record of the notification, each an object to process,
            # a skipped event (removal, tagging, test, own archive write) or an
            # invalid record
            for index, item in enumerate(items):
                if isinstance(item, Skipped):
                    self.stats[f"skipped.{item.reason}"] += 1
                    log.debug("skipped %s: %s", item.event_name, item.reason)
                    continue
                if isinstance(item, Invalid):
                    await self.send_dead_letter("events", InvalidEvent(item.reason), event, raw=raw, index=index)
                    continue
                try:
                    check_source(item, allowed_buckets=self.settings.allowed_buckets,
                                 archive_prefix=self.settings.archive_prefix,
                                 review_prefix=self.settings.review_prefix_in_use)
                    record = await self.fetch_tensor(item, received_at)
                except BadInput as exc:
                    await self.send_dead_letter("preprocess", exc, event, image=item, index=index)
                    continue
                # record: 28x28 float32 tensor + object identity + timings
                await self.tensors_topic.send(key=item.path, value=record)
                self.stats["preprocessed"] += 1


    # -- 2. tensors -> infer -> labeled --------------------------------------------


    async def predict_batch(self, batch: np.ndarray) -> list:
        """One predictor request for the batch, retried while the predictor is down.

        A predictor that keeps answering 5xx to this batch while it says it is
        ready, and answers a blank image, fails on the input, not for everyone:
        after ``predictor_max_failures`` such answers this raises
        ``PredictorFailed`` (the batch is then split). Unreachable, not ready, or
        failing the blank image too: retried without end.
        """
        client = self.app.http.predictor
        failures = 0

        async def attempt() -> list:
            nonlocal failures
            try:
                return await client.predict(batch)
            except PredictorUnavailable as exc:
                if exc.status is not None and exc.status >= 500 and await client.ready():
                    failures += 1
                    if failures >= self.settings.predictor_max_failures:
                        await client.predict(_BLANK)  # raises PredictorUnavailable if it fails that too
                        raise PredictorFailed(
                            f"{exc} ({failures} times, while the predictor said it was ready and answered a blank image)"
                        ) from exc
                raise

        with self.metrics.busy["predict"].track_inprogress():
            return await retry_until_done(
                attempt,
                what=f"predict {len(batch)} tensors",
                initial=self.settings.retry_initial,
                maximum=self.settings.retry_max,
                on_retry=self.metrics.retried["predictor"].inc,
            )


    async def label(self, events: Sequence[EventT], tensors: Sequence[np.ndarray], formed_at: float) -> None:
        """Predict ``tensors`` and send a labeled record for each event.

        A 4xx answer (or 5xx that only this batch gets, ``PredictorFailed``) means
        some input in the batch is unacceptable: the batch is split in halves
        until the offending tensors are alone, and only those are dead-lettered.
        """
        started = time.perf_counter()
        try:
            predictions = await self.predict_batch(np.stack(tensors))
        except (PredictorRejected, PredictorFailed) as exc:
            if len(events) == 1:
                record: TensorRecord = events[0].value
                await self.send_dead_letter("inference", exc, events[0], image=record.image)
                return
            half = len(events) // 2
            await self.label(events[:half], tensors[:half], formed_at)
            await self.label(events[half:], tensors[half:], formed_at)
            return
        predict_seconds = time.perf_counter() - started
        for event, tensor, prediction in zip(events, tensors, predictions, strict=True):
            record = event.value
            confidence = top_confidence(prediction.probabilities)
            # the archive agent decides the same from the labeled record
            self.recent.image(record.image.url, prediction.digit, confidence, tensor,
                              review=held_for_review(confidence, self.settings.review_below))
            timings = dict(record.timings)
            # wait: from the tensor record being produced to its batch being formed
            timings["batch_wait"] = max(0.0, formed_at - event.message.timestamp)
            timings["predict"] = predict_seconds
            labeled = LabeledRecord(
                image=record.image,
                digit=prediction.digit,
                model=self.settings.model_name,
                timings=timings,
                received_at=record.received_at,
                probabilities=list(prediction.probabilities) if prediction.probabilities is not None else None,
                confidence=confidence,
            )
            await self.labeled_topic.send(key=record.image.path, value=labeled)
        self.stats["labeled"] += len(events)


    async def infer(self, stream: BatchingStream) -> None:
        # a batch goes when it holds batch_max_size tensors or its oldest has
        # waited batch_max_delay; its events are acked after this body has run
        async for batch in stream.take_batches(self.policy):
            formed_at = time.time()
            good_events: list[EventT] = []
            tensors: list[np.ndarray] = []
            for event in batch:
                try:
                    tensors.append(event.value.array())
                except BadInput as exc:
                    await self.send_dead_letter("inference", exc, event, image=event.value.image)
                    continue
                good_events.append(event)
            # good_events / tensors: (B,) events and their (28, 28) float32 arrays
            if good_events:
                self.metrics.batch_size.observe(len(good_events))
                await self.label(good_events, tensors, formed_at)


    # -- 3. labeled -> archive -> the images table ----------------------------------


    async def archive(self, stream: StreamT[LabeledRecord]) -> None:
        async for event in stream.events():
            record: LabeledRecord = event.value
            started = time.perf_counter()
            # where it goes follows from the record and the settings alone: a
            # replay copies to the same key and sets the same entry
            key, review = archive_destination(record.image, record.digit, record.confidence, self.settings)
            try:
                with self.metrics.busy["archive"].track_inprogress():
                    await self.s3_call(lambda record=record, key=key: self.app.storage.archive(record.image, key),
                                       what=f"archive {record.image.url!r}",
                                       bucket=record.image.bucket)
            except BadInput as exc:
                await self.send_dead_letter("archive", exc, event, image=record.image)
                continue
            # a set, not a counter: a replayed record rewrites the same key; the
            # changelog write goes out before this event's offset is committed
            identity = record.image.identity
            new = identity not in self.images
            self.images[identity] = image_entry(record.digit, record.confidence, review)
            self.stats["counted"] += 1
            if review:
                self.stats["held_for_review"] += 1
            if new:
                (self.metrics.reviewed if review else self.metrics.counted)[record.digit].inc()
            timings = {**record.timings, "archive": time.perf_counter() - started,
                       "end_to_end": time.time() - record.received_at}
            self.metrics.observe(timings)
            self.recent.counted(timings)


    # -- 4. dead letters -> their table --------------------------------------------


    async def tally_dead_letters(self, stream: StreamT[DeadLetter]) -> None:
        async for record in stream:
            self.dead_letters[record.source] = record.kind
