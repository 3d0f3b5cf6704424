"""``streamapp dead-letters list|redrive``: look at the dead letters, and re-publish what they failed on.

Reads: the dead-letter topic, every partition from its beginning to the end
it has when the command starts, with a plain consumer in no group (nothing
is committed; the workers' group is untouched); the broker address from
``BROKER_URL`` or a running ``streamapp up``'s ``stack.env``, the topic names
from :class:`~streamapp.settings.Settings`. ``redrive`` also reads each
chosen object version's metadata from S3 (one HEAD, unless ``--no-verify``).

Writes: ``list``: a table on stdout, untrusted text (keys, reasons,
notification text) escaped so it cannot forge lines or send terminal
escapes; or, with ``--json``, one JSON object per dead letter and line.
``redrive``: for each chosen object version, once per run however many dead
letters name it, a MinIO ``s3:ObjectCreated:Put`` notification keyed
``bucket/key`` on the events topic; with ``--include-invalid``, the stored
text of chosen invalid notifications, as is; and a summary on stdout.

A redrive is idempotent: the pipeline counts an image once per object
version (its images table is keyed ``bucket/key@version-or-etag``), so an
image redriven twice, or redriven after it was counted, is not counted again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from aiobotocore.session import get_session
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from botocore.exceptions import BotoCoreError, ClientError

from streamapp.embedded.broker import topic_partitions
from streamapp.embedded.notifications import minio_notification
from streamapp.pipeline.events import CREATED_PREFIX
from streamapp.pipeline.records import DeadLetter, ObjectRef
from streamapp.settings import Settings
from streamapp.tools.upload import bootstrap_servers

log = logging.getLogger(__name__)

#: the event name of every notification a redrive publishes for an object
REDRIVE_EVENT = CREATED_PREFIX + "Put"
#: ``source.userAgent`` of a redriven notification: tells it from the store's own
REDRIVE_AGENT = "streamapp-dead-letters-redrive"

#: what a table cell of each column shows at most (escaped characters); --json has everything
OBJECT_WIDTH = 80
REASON_WIDTH = 120

#: HEAD requests in flight at once when a redrive checks its objects
CHECK_CONCURRENCY = 16

# why a chosen dead letter was not answered by a message of its own
DUPLICATE = "same object version (or notification) as another chosen dead letter: sent once"
INVALID = "invalid notification: re-published only with --include-invalid"
NOTHING = "names no object and holds no notification"
OVER_LIMIT = "over --limit"
GONE = "object version no longer in S3"
CHANGED = "object replaced since (its new version has a notification of its own)"
CHECK_FAILED = "could not be checked in S3"

_NOT_FOUND = frozenset({"404", "NoSuchKey", "NoSuchVersion", "NoSuchBucket", "NotFound"})


class DeadLetterError(Exception):
    """The command cannot do what was asked (broker unreachable, topic unreadable ...)."""


# -- reading --------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """One dead letter, where it sits in the dead-letter topic, and when it was written."""

    letter: DeadLetter
    partition: int
    offset: int
    #: the record's ``failed_at``, or its Kafka timestamp when it has none (seconds)
    at: float


def parse_dead_letter(value: bytes | None) -> DeadLetter:
    """One dead-letter topic value -> :class:`DeadLetter`; ``ValueError`` saying what is wrong.

    The topic's text is checked field by field (types, not just presence):
    anything can be written to a topic, and Faust's ``from_data`` takes a
    nested dict for a record without complaint.
    """
    if value is None:
        raise ValueError("no value")
    try:
        doc = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    image = doc.get("image")
    event = doc.get("event")
    if event is not None and not isinstance(event, str):
        raise ValueError("event: expected a string")
    failed_at = doc.get("failed_at", 0.0)
    if isinstance(failed_at, bool) or not isinstance(failed_at, int | float) or not math.isfinite(failed_at):
        raise ValueError("failed_at: expected a number")
    return DeadLetter(
        stage=_string(doc, "stage"),
        kind=_string(doc, "kind"),
        reason=_string(doc, "reason", default=""),
        image=None if image is None else _object_ref(image),
        event=event,
        topic=_string(doc, "topic", default=""),
        partition=_integer(doc, "partition", -1),
        offset=_integer(doc, "offset", -1),
        index=_integer(doc, "index", 0),
        failed_at=float(failed_at),
    )


def _object_ref(doc: Any) -> ObjectRef:
    if not isinstance(doc, dict):
        raise ValueError("image: expected an object")
    bucket, key = _string(doc, "bucket", where="image."), _string(doc, "key", where="image.")
    if not bucket or not key:
        raise ValueError("image: empty bucket or key")
    return ObjectRef(
        bucket=bucket,
        key=key,
        etag=_string(doc, "etag", default="", where="image."),
        version_id=_string(doc, "version_id", default="", where="image."),
        size=_integer(doc, "size", -1, where="image."),
        event_name=_string(doc, "event_name", default="", where="image."),
        event_time=_string(doc, "event_time", default="", where="image."),
    )


def _string(doc: Mapping[str, Any], name: str, *, default: str | None = None, where: str = "") -> str:
    value = doc.get(name, default)
    if not isinstance(value, str):
        raise ValueError(f"{where}{name}: expected a string")
    return value


def _integer(doc: Mapping[str, Any], name: str, default: int, *, where: str = "") -> int:
    value = doc.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}{name}: expected an integer")
    return value


async def read_dead_letters(broker_url: str, topic: str, *, timeout: float = 60.0) -> tuple[list[Found], int]:
    """Every dead letter in ``topic`` up to its end now, and how many records could not be read.

    A plain consumer with no group: all partitions assigned, read from the
    beginning to the end offsets taken at the start. On the embedded broker
    (``tansu://``) ListOffsets(LATEST) can answer short, so the ends come from
    a Fetch's high watermark as the workers' do; on Kafka from ListOffsets.
    """
    bootstrap = bootstrap_servers(broker_url)
    tps = await topic_partitions(bootstrap, topic)
    if not tps:
        log.warning("topic %s has no partitions (it does not exist yet)", topic)
        return [], 0
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await _end_offsets(consumer, tps, embedded=_is_embedded(broker_url))
        starts = await consumer.beginning_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        pending = {tp for tp in tps if ends[tp] > starts[tp]}
        consumer.pause(*(set(tps) - pending))
        found: list[Found] = []
        unreadable = 0
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise DeadLetterError(
                    f"{topic}: partitions {sorted(tp.partition for tp in pending)} not read to their end "
                    f"within {timeout:g}s ({len(found)} dead letters read)"
                )
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for tp, messages in batch.items():
                for message in messages:
                    if message.offset >= ends[tp]:
                        break
                    try:
                        letter = parse_dead_letter(message.value)
                    except ValueError as exc:
                        unreadable += 1
                        log.warning("%s[%d]@%d is not a dead letter: %s", topic, tp.partition, message.offset, exc)
                        continue
                    at = letter.failed_at or message.timestamp / 1000
                    found.append(Found(letter, tp.partition, message.offset, at))
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
                    consumer.pause(tp)
        return found, unreadable
    finally:
        await consumer.stop()


def _is_embedded(broker_url: str) -> bool:
    return broker_url.strip().lower().startswith("tansu://")


async def _end_offsets(consumer: AIOKafkaConsumer, tps: list[TopicPartition], *, embedded: bool) -> dict[TopicPartition, int]:
    if embedded:
        from streamapp.embedded.tansu import fetch_end_offsets  # the workaround for the embedded broker only

        return dict(await fetch_end_offsets(consumer, tps))
    return dict(await consumer.end_offsets(tps))


# -- choosing -------------------------------------------------------------------------


def split_values(values: Iterable[str] | None) -> frozenset[str]:
    """``--kind a --kind b,c`` -> {a, b, c}; blanks dropped."""
    return frozenset(part.strip() for value in values or () for part in value.split(",") if part.strip())


def parse_time(text: str) -> float:
    """Unix seconds, or an ISO 8601 date / time (UTC unless it names an offset) -> Unix seconds."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"{text!r}: not a finite number of seconds")
        return seconds
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r}: expected ISO 8601 (2026-12-01T08:30:00Z) or Unix seconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command is about: every filter given must match (empty: any)."""

    kinds: frozenset[str] = frozenset()
    stages: frozenset[str] = frozenset()
    since: float | None = None
    until: float | None = None

    def __call__(self, found: Found) -> bool:
        letter = found.letter
        return (
            (not self.kinds or letter.kind in self.kinds)
            and (not self.stages or letter.stage in self.stages)
            and (self.since is None or found.at >= self.since)
            and (self.until is None or found.at <= self.until)
        )

    def describe(self) -> str:
        parts = []
        if self.kinds:
            parts.append("kind " + ",".join(sorted(self.kinds)))
        if self.stages:
            parts.append("stage " + ",".join(sorted(self.stages)))
        if self.since is not None:
            parts.append("since " + utc(self.since))
        if self.until is not None:
            parts.append("until " + utc(self.until))
        return escape("; ".join(parts))


def chronological(found: Iterable[Found]) -> list[Found]:
    """Oldest first; ties in the order they were written."""
    return sorted(found, key=lambda f: (f.at, f.partition, f.offset))


def choose(found: Iterable[Found], selection: Selection) -> list[Found]:
    return chronological(f for f in found if selection(f))


# -- showing --------------------------------------------------------------------------


def escape(text: str) -> str:
    """``text`` with every character that is not printable written as a Python escape.

    As ``repr`` decides it: control characters (newlines, ESC, DEL, C1),
    format characters (bidi overrides, zero-width), line and paragraph
    separators, surrogates and unassigned code points become ``\\n``,
    ``\\x1b``, ``\\u202e`` ...; a backslash is doubled so an escape shown is
    always one the text did not spell out. The result is one line and moves
    no cursor.
    """
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char.isprintable():
            out.append(char)
        elif char in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char])
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, ending ``...`` when cut."""
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


def cell(text: str, width: int) -> str:
    """Untrusted text, safe for one table cell."""
    return shorten(escape(text), width)


def utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def object_label(letter: DeadLetter) -> str:
    """``s3://bucket/key`` (unescaped), ``(notification)`` for an invalid notification."""
    if letter.image is not None:
        return letter.image.url
    return "(notification)" if letter.event is not None else "(none)"


def table(found: Sequence[Found]) -> list[str]:
    """The readable listing: time (UTC), stage, kind, object, reason; one line per dead letter."""
    header = ("time (UTC)", "stage", "kind", "object", "reason")
    rows = [
        (utc(f.at), cell(f.letter.stage, 20), cell(f.letter.kind, 30), cell(object_label(f.letter), OBJECT_WIDTH),
         cell(f.letter.reason, REASON_WIDTH))
        for f in found
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    return [
        "  ".join([*(value.ljust(width) for value, width in zip(row[:-1], widths, strict=True)), row[-1]]).rstrip()
        for row in [header, *rows]
    ]


def as_json(found: Found) -> str:
    """One dead letter as a line of JSON (ASCII only): every field, the object's too, and where it sits."""
    letter = found.letter
    doc = {
        "time": datetime.fromtimestamp(found.at, UTC).isoformat().replace("+00:00", "Z"),
        "stage": letter.stage,
        "kind": letter.kind,
        "reason": letter.reason,
        "image": None if letter.image is None else {**letter.image.asdict(), "identity": letter.image.identity},
        "event": letter.event,
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "index": letter.index,
        "failed_at": letter.failed_at,
        "dead_letter": {"partition": found.partition, "offset": found.offset},
    }
    return json.dumps(doc, ensure_ascii=True)


# -- redriving ------------------------------------------------------------------------


def redrive_notification(ref: ObjectRef, *, endpoint: str | None = None, now: datetime | None = None) -> tuple[bytes, bytes]:
    """``(kafka_key, value)``: MinIO's ``s3:ObjectCreated:Put`` for exactly this object version.

    Bucket, key, ETag, version id and size come from the dead letter, and
    ``eventTime`` is the original notification's when the dead letter kept
    it; no content type is claimed (the dead letter does not know it), and
    ``source.userAgent`` says it is a redrive.
    """
    return minio_notification(
        ref,
        event_name=REDRIVE_EVENT,
        endpoint=endpoint or "http://127.0.0.1:9000",
        content_type="",
        user_agent=REDRIVE_AGENT,
        now=now,
    )


@dataclass
class Candidate:
    """One message a redrive may publish, and the chosen dead letters it answers."""

    label: str  # unescaped: s3://bucket/key@version, or "notification sha256:..."
    key: bytes | None
    value: bytes
    ref: ObjectRef | None
    letters: list[Found] = field(default_factory=list)

    @property
    def kinds(self) -> str:
        return ",".join(sorted({f.letter.kind for f in self.letters}))


def candidates(chosen: Sequence[Found], *, include_invalid: bool = False,
               endpoint: str | None = None) -> tuple[list[Candidate], Counter[str]]:
    """What a redrive of ``chosen`` (oldest first) would publish, in that order, once per
    object version or notification text; and the dead letters that have nothing to publish."""
    messages: dict[str, Candidate] = {}
    skipped: Counter[str] = Counter()
    for found in chosen:
        letter = found.letter
        if letter.image is not None:
            ref = letter.image
            identity = "object " + ref.identity
            if identity not in messages:
                key, value = redrive_notification(ref, endpoint=endpoint)
                version = ref.version_id or ref.etag
                label = ref.url + (f"@{version}" if version else "")
                messages[identity] = Candidate(label, key, value, ref)
        elif letter.event is not None:
            if not include_invalid:
                skipped[INVALID] += 1
                continue
            value = letter.event.encode("utf-8", errors="replace")
            digest = hashlib.sha256(value).hexdigest()
            identity = "event " + digest
            if identity not in messages:
                messages[identity] = Candidate(f"notification sha256:{digest[:16]}", None, value, None)
        else:
            skipped[NOTHING] += 1
            continue
        messages[identity].letters.append(found)
    return list(messages.values()), skipped


#: an object check: None if the version is there, else why it is skipped
Check = Callable[[ObjectRef], Awaitable[str | None]]
#: publishes one message; returns when the broker has it
Publish = Callable[[Candidate], Awaitable[None]]


@dataclass
class Outcome:
    chosen: int
    sent: list[Candidate] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    #: candidates the object check or --limit kept back, with the reason
    held: list[tuple[Candidate, str]] = field(default_factory=list)
    failed: list[tuple[Candidate, str]] = field(default_factory=list)


async def redrive(chosen: Sequence[Found], *, include_invalid: bool = False, limit: int | None = None,
                  check: Check | None = None, publish: Publish | None = None,
                  endpoint: str | None = None) -> Outcome:
    """Publish one message per distinct object version (or notification text) among ``chosen``.

    Oldest first, at most ``limit`` messages; each object checked first when
    ``check`` is given (checks run :data:`CHECK_CONCURRENCY` at a time, and
    stop once the limit is reached); ``publish`` None is a dry run. Every
    chosen dead letter is accounted for: ``chosen == len(sent) + sum(skipped)``
    (``failed`` ones, if any, count as skipped under their error).
    """
    items, skipped = candidates(chosen, include_invalid=include_invalid, endpoint=endpoint)
    outcome = Outcome(chosen=len(chosen), skipped=skipped)
    accepted: list[Candidate] = []
    position = 0
    while position < len(items):
        if limit is not None and len(accepted) >= limit:
            break
        chunk = items[position : position + CHECK_CONCURRENCY]
        position += len(chunk)
        problems = await asyncio.gather(*(_check(check, item) for item in chunk))
        for item, problem in zip(chunk, problems, strict=True):
            if problem is None and limit is not None and len(accepted) >= limit:
                problem = OVER_LIMIT
            if problem is not None:
                outcome.held.append((item, problem))
                outcome.skipped[problem] += len(item.letters)
                continue
            accepted.append(item)
    for item in items[position:]:
        outcome.held.append((item, OVER_LIMIT))
        outcome.skipped[OVER_LIMIT] += len(item.letters)
    results: list[Any] = [None] * len(accepted)
    if publish is not None:
        # all at once: the producer batches them; each result is the broker's ack or the error
        results = await asyncio.gather(*(publish(item) for item in accepted), return_exceptions=True)
    for item, result in zip(accepted, results, strict=True):
        if isinstance(result, BaseException):
            error = f"not sent: {type(result).__name__}: {result}"
            outcome.failed.append((item, error))
            outcome.skipped[error] += len(item.letters)
            continue
        outcome.sent.append(item)
        if len(item.letters) > 1:
            outcome.skipped[DUPLICATE] += len(item.letters) - 1
    return outcome


async def _check(check: Check | None, item: Candidate) -> str | None:
    if check is None or item.ref is None:
        return None
    return await check(item.ref)


def head_check(s3: Any) -> Check:
    """A :data:`Check` with one S3 HEAD: the version must exist, and without a
    version id the current object must still have the dead letter's ETag.

    Sending a notification for a replaced object would have the worker read
    the new content and count it under the old version's identity, beside
    the new version's own count.
    """

    async def check(ref: ObjectRef) -> str | None:
        params = {"Bucket": ref.bucket, "Key": ref.key}
        if ref.version_id:
            params["VersionId"] = ref.version_id
        try:
            head = await s3.head_object(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if str(error.get("Code")) in _NOT_FOUND or status == 404:
                return GONE
            return f"{CHECK_FAILED}: {error.get('Code') or status}"
        except (BotoCoreError, OSError, TimeoutError) as exc:
            raise DeadLetterError(f"cannot reach S3 to check the objects ({type(exc).__name__}: {exc}); "
                                  "--no-verify sends without checking") from exc
        etag = str(head.get("ETag", "")).strip('"')
        if not ref.version_id and ref.etag and etag and etag != ref.etag.strip('"'):
            return CHANGED
        return None

    return check


def plural(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def summary(outcome: Outcome, *, read: int, events_topic: str, dry_run: bool) -> list[str]:
    objects = sum(1 for item in outcome.sent if item.ref is not None)
    verb = "would send" if dry_run else "sent"
    lines = [
        f"chosen: {plural(outcome.chosen, 'dead letter')} (of {read} read)",
        f"{verb}: {plural(len(outcome.sent), 'notification')} to {escape(events_topic)} "
        f"({plural(objects, 'object version')}, {plural(len(outcome.sent) - objects, 'invalid notification')} "
        "as stored)",
        f"skipped: {plural(sum(outcome.skipped.values()), 'dead letter')}" + (":" if outcome.skipped else ""),
    ]
    for reason, count in outcome.skipped.most_common():
        lines.append(f"  {count:>6}  {escape(reason)}")
    return lines


# -- the command -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from streamapp.cli import DEFAULT_DATA_DIR

    parser = argparse.ArgumentParser(
        prog="streamapp dead-letters",
        description="List the dead letters, or redrive them: re-publish the notifications they failed on.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kind", action="append", metavar="KIND[,KIND]",
                        help="only these kinds (repeatable, or comma-separated), e.g. predictor_failed")
    common.add_argument("--stage", action="append", metavar="STAGE[,STAGE]",
                        help="only these stages (repeatable, or comma-separated): events, preprocess, inference, archive")
    common.add_argument("--since", type=_time_argument, metavar="TIME",
                        help="only dead letters written at or after TIME: ISO 8601 (UTC unless it says) or Unix seconds")
    common.add_argument("--until", type=_time_argument, metavar="TIME", help="only dead letters written at or before TIME")
    common.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="without BROKER_URL, read a running `streamapp up`'s stack.env from here (default %(default)s)")
    common.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to read the dead-letter topic to its end (default %(default)s)")

    ls = sub.add_parser("list", parents=[common], help="the latest dead letters, oldest of them first",
                        description="The latest dead letters, oldest of them first: time (UTC), stage, kind, "
                                    "object, reason. Keys and reasons are shown escaped, reasons cut short; "
                                    "--json has every field.")
    ls.add_argument("-n", "--last", type=_positive, default=20, metavar="N", help="how many (default %(default)s)")
    ls.add_argument("--json", action="store_true", help="one JSON object per dead letter and line, every field")
    ls.set_defaults(run=_list)

    rd = sub.add_parser(
        "redrive", parents=[common], help="re-publish the notifications of the chosen dead letters",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Re-publish, oldest first, what the chosen dead letters failed on, for instance once a\n"
                    "predictor outage that ended in dead letters is over:\n"
                    "  - a dead letter about an object: a MinIO s3:ObjectCreated:Put notification for that\n"
                    "    exact object version (bucket, key, ETag, version id, size), keyed bucket/key, on the\n"
                    "    events topic; once per run however many chosen dead letters name that version;\n"
                    "  - an invalid notification (kind invalid_event, only its text was kept): re-published as\n"
                    "    stored only with --include-invalid, since it would just fail again unless the parser\n"
                    "    changed (the worker keeps the first 64 KiB of it).\n"
                    "Each object version is checked in S3 first (HEAD): one that is gone, or was replaced by\n"
                    "new content, is skipped.\n\n"
                    "Idempotent: the pipeline counts an image once per object version (its images table is\n"
                    "keyed bucket/key@version-or-etag), so a redrive run twice, or an image redriven after it\n"
                    "was counted, counts nothing twice. Kinds about the content itself (undecodable_image,\n"
                    "empty_image, object_too_large ...) fail again and make new dead letters: choose --kind.",
    )
    rd.add_argument("--limit", type=_positive, metavar="N", help="publish at most N messages (the oldest first)")
    rd.add_argument("--dry-run", action="store_true", help="publish nothing: list what would be sent, and why not the rest")
    rd.add_argument("--include-invalid", action="store_true",
                    help="also re-publish the stored text of invalid notifications (they fail again unless fixed)")
    rd.add_argument("--no-verify", dest="verify", action="store_false",
                    help="do not check the objects in S3 before publishing (no S3 access needed)")
    rd.set_defaults(run=_redrive)
    return parser


def _time_argument(text: str) -> float:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1")
    return value


def client_env(data_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """``environ``, completed from a running ``streamapp up``'s stack.env in ``data_dir``:
    its broker unless ``BROKER_URL`` is set, its S3 endpoint and credentials unless an
    S3 endpoint is (as ``streamapp upload`` does)."""
    from streamapp.embedded.stack import read_env_file

    env = dict(environ)
    path = data_dir / "stack.env"
    stack = read_env_file(path) if path.exists() else {}
    if stack.get("BROKER_URL") and not env.get("BROKER_URL"):
        env["BROKER_URL"] = stack["BROKER_URL"]
    if not (env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")):
        env.update({key: value for key, value in stack.items() if key.startswith("AWS_")})
    return env


@dataclass(frozen=True)
class Context:
    broker_url: str
    settings: Settings
    env: Mapping[str, str]
    out: TextIO


async def _read(context: Context, args: argparse.Namespace) -> tuple[list[Found], list[Found]]:
    """(everything read, the chosen ones oldest first)."""
    selection = Selection(split_values(args.kind), split_values(args.stage), args.since, args.until)
    found, unreadable = await read_dead_letters(context.broker_url, context.settings.dead_letter_topic,
                                                timeout=args.timeout)
    if unreadable:
        print(f"{unreadable} records of {context.settings.dead_letter_topic} are not dead letters (skipped)",
              file=sys.stderr)
    return found, choose(found, selection)


async def _list(context: Context, args: argparse.Namespace) -> int:
    found, chosen = await _read(context, args)
    latest = chosen[-args.last :]
    if args.json:
        for item in latest:
            print(as_json(item), file=context.out)
        return 0
    if not latest:
        print(f"no dead letters in {escape(context.settings.dead_letter_topic)}"
              + (f" ({len(found)} without the filters)" if found else ""), file=context.out)
        return 0
    for line in table(latest):
        print(line, file=context.out)
    print(f"\nthe latest {len(latest)} of {len(chosen)} chosen ({len(found)} in "
          f"{escape(context.settings.dead_letter_topic)}); --json for every field", file=context.out)
    return 0


async def _redrive(context: Context, args: argparse.Namespace) -> int:
    found, chosen = await _read(context, args)
    settings = context.settings
    async with contextlib.AsyncExitStack() as stack:
        check = None
        if args.verify and any(f.letter.image is not None for f in chosen):
            s3 = await stack.enter_async_context(get_session().create_client("s3", **_s3_options(settings, context.env)))
            check = head_check(s3)
        publish = None
        if not args.dry_run:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(context.broker_url), acks="all", linger_ms=5)
            await producer.start()
            stack.push_async_callback(producer.stop)
            publish = _publisher(producer, settings.events_topic)
        outcome = await redrive(chosen, include_invalid=args.include_invalid, limit=args.limit, check=check,
                                publish=publish, endpoint=settings.s3_endpoint_url)
    out = context.out
    if args.dry_run:
        for item in outcome.sent:
            print(f"would send  {escape(item.label)}  ({escape(item.kinds)}; {plural(len(item.letters), 'dead letter')})",
                  file=out)
    for item, problem in outcome.held:
        if problem != OVER_LIMIT or args.dry_run:
            print(f"skip        {escape(item.label)}  ({escape(problem)})", file=out)
    for item, error in outcome.failed:
        print(f"failed      {escape(item.label)}  ({escape(error)})", file=out)
    for line in summary(outcome, read=len(found), events_topic=settings.events_topic, dry_run=args.dry_run):
        print(line, file=out)
    return 1 if outcome.failed else 0


def _publisher(producer: AIOKafkaProducer, topic: str) -> Publish:
    async def publish(item: Candidate) -> None:
        await producer.send_and_wait(topic, value=item.value, key=item.key)

    return publish


def _s3_options(settings: Settings, env: Mapping[str, str]) -> dict[str, Any]:
    """The S3 client's endpoint and region; credentials only when the environment
    (or the stack's env file) names them, else botocore's own chain finds them."""
    options: dict[str, Any] = {"endpoint_url": settings.s3_endpoint_url, "region_name": settings.s3_region}
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        options["aws_access_key_id"] = env["AWS_ACCESS_KEY_ID"]
        options["aws_secret_access_key"] = env["AWS_SECRET_ACCESS_KEY"]
        if env.get("AWS_SESSION_TOKEN"):
            options["aws_session_token"] = env["AWS_SESSION_TOKEN"]
    return options


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None,
         out: TextIO | None = None) -> int:
    """``streamapp dead-letters ...``; 0 when done, 1 when it could not be (the reason on stderr)."""
    args = build_parser().parse_args(argv)
    env = client_env(args.data_dir, os.environ if environ is None else environ)
    broker_url = env.get("BROKER_URL")
    if not broker_url:
        print("streamapp dead-letters: no broker: set BROKER_URL, or run `streamapp up` (its stack.env in "
              f"{args.data_dir})", file=sys.stderr)
        return 1
    try:
        context = Context(broker_url, Settings.from_env(env), env, out or sys.stdout)
        return asyncio.run(args.run(context, args))
    except (DeadLetterError, KafkaError, ValueError, OSError) as exc:
        message = str(exc) if str(exc).startswith(type(exc).__name__) else f"{type(exc).__name__}: {exc}"
        print(f"streamapp dead-letters: {escape(message)}", file=sys.stderr)
        return 1
