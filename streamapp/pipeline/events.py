"""Bucket notifications -> object references (pure: no I/O).

Reads: the raw value of one events-topic message, in any of the shapes an
object store publishes:

* MinIO's Kafka target: ``{"EventName", "Key": "bucket/key", "Records": [...]}``,
  one record per message, ``eventName`` like ``s3:ObjectCreated:Put``;
* AWS S3 notifications: ``{"Records": [...]}``, possibly several records,
  ``eventName`` like ``ObjectCreated:Put`` (no ``s3:`` prefix), plus the
  ``{"Service": "Amazon S3", "Event": "s3:TestEvent", ...}`` S3 sends once
  when a notification is configured;
* Amazon EventBridge: ``{"detail-type": "Object Created", "source": "aws.s3",
  "detail": {"bucket": ..., "object": ..., "reason": "PutObject"}}``.

Writes: a list with one item per record, in order (EventBridge and test events
count as one record):

* :class:`~streamapp.pipeline.records.ObjectRef` -- a new object version to process;
* :class:`Skipped` -- a record that is fine but not ours to process (removals,
  reads, tagging / retention / legal-hold changes, test events, replication,
  lifecycle, and the pipeline's own archive writes); counted, not an error;
* :class:`Invalid` -- one unusable record, with a reason, bound for the
  dead-letter topic. Its siblings are still returned.

:func:`parse_notification` raises :class:`~streamapp.errors.InvalidEvent`
only when no record can be told apart: the message is not UTF-8, not JSON,
not of a known schema, or its ``Records`` is not a non-empty list.

Object keys arrive URL-encoded the way Go's ``url.QueryEscape`` and Python's
``quote_plus`` write them (space as ``+``, ``/`` as ``%2F``, UTF-8 bytes as
``%XX``); :class:`ObjectRef` always holds the decoded key.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote_plus

from streamapp.errors import BucketNotAllowed, InvalidEvent, KeyNotAllowed
from streamapp.pipeline.records import ObjectRef

__all__ = [
    "Invalid",
    "Item",
    "Skipped",
    "is_own_archive_write",
    "parse_notification",
]

#: S3's limit on a key's length, in UTF-8 bytes
MAX_KEY_BYTES = 1024

#: created events that change only metadata of an existing version (MinIO names
#: them under ObjectCreated); every other ``s3:ObjectCreated:*`` is processed
METADATA_ONLY = frozenset(
    {
        "s3:ObjectCreated:PutTagging",
        "s3:ObjectCreated:DeleteTagging",
        "s3:ObjectCreated:PutRetention",
        "s3:ObjectCreated:PutLegalHold",
    }
)

#: EventBridge "Object Created" ``detail.reason`` -> the notification event name
EVENTBRIDGE_REASONS = {
    "PutObject": "s3:ObjectCreated:Put",
    "POST Object": "s3:ObjectCreated:Post",
    "PostObject": "s3:ObjectCreated:Post",
    "CopyObject": "s3:ObjectCreated:Copy",
    "CompleteMultipartUpload": "s3:ObjectCreated:CompleteMultipartUpload",
}

CREATED_PREFIX = "s3:ObjectCreated:"
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A record that is valid but not to be processed; counted under ``reason``."""

    reason: str
    event_name: str
    bucket: str | None = None
    key: str | None = None


@dataclasses.dataclass(frozen=True)
class Invalid:
    """One record that cannot be used; ``index`` is its position in ``Records``."""

    reason: str
    index: int = 0


Item = ObjectRef | Skipped | Invalid


class _Bad(Exception):
    """A record-level problem; becomes :class:`Invalid` with ``str(self)``."""


# -- parsing -------------------------------------------------------------------


def parse_notification(
    raw: bytes | str | None, *, archive_bucket: str | None = None, archive_prefix: str = "",
    review_prefix: str | None = None,
) -> list[Item]:
    """Every record of one notification as an ObjectRef, Skipped or Invalid.

    With ``archive_bucket`` set, objects the archiver wrote (see
    :func:`is_own_archive_write`; under ``review_prefix`` too while review is
    on) come back as ``Skipped("own archive write")`` so the pipeline never
    classifies its own output.
    """
    doc = _load(raw)
    if "Records" in doc:
        records = doc["Records"]
        if not isinstance(records, list) or not records:
            raise InvalidEvent(f"Records must be a non-empty list, got {_show(records)}")
        items = [_one(index, _record, record) for index, record in enumerate(records)]
    elif "detail-type" in doc and "detail" in doc:
        if doc.get("source") != "aws.s3":
            raise InvalidEvent(f"EventBridge event from source {_show(doc.get('source'))}, expected 'aws.s3'")
        items = [_one(0, _eventbridge, doc)]
    elif doc.get("Event") == "s3:TestEvent":
        bucket = doc.get("Bucket")
        items = [Skipped("s3:TestEvent", "s3:TestEvent", bucket=bucket if isinstance(bucket, str) else None)]
    else:
        raise InvalidEvent(f"no known notification schema (top-level keys: {sorted(doc)[:10]})")
    if archive_bucket:
        items = [_skip_archive(item, archive_bucket, archive_prefix, review_prefix) for item in items]
    return items


#: S3's longest key, in UTF-8 bytes
MAX_KEY_BYTES = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_source(ref: ObjectRef, *, allowed_buckets: frozenset[str] | None, archive_prefix: str = "",
                 review_prefix: str | None = None) -> None:
    """Refuse, before any S3 call, an object the workers must not read or cannot archive.

    ``BucketNotAllowed`` for a bucket outside ``allowed_buckets`` (None: any);
    ``KeyNotAllowed`` for a key that, put under ``<prefix><digit>/``, would
    leave that prefix once a path is normalised (``..`` segments), holds
    control characters (S3 signs and lists them unreliably, and logs and
    pages would carry them), or makes the archive key too long for S3 (under
    the longer of ``archive_prefix`` and, while review is on, ``review_prefix``:
    which one an image gets is known only after it is classified).
    """
    if allowed_buckets is not None and ref.bucket not in allowed_buckets:
        raise BucketNotAllowed(f"bucket {ref.bucket!r} is not one the workers read from "
                               f"(STREAMAPP_SOURCE_BUCKETS: {', '.join(sorted(allowed_buckets))})")
    if _CONTROL.search(ref.key):
        raise KeyNotAllowed(f"key {ref.key!r} holds control characters")
    if ".." in ref.key.split("/"):
        # S3 keeps it literally, but anything that maps keys to paths (a sync
        # to disk, a static site) would resolve it out of <prefix><digit>/
        raise KeyNotAllowed(f"key {ref.key!r} has a '..' segment: its archive copy would leave "
                            f"{archive_prefix + '<digit>/'!r} wherever keys become paths")
    longest = max(len(archive_prefix.encode()), len((review_prefix or "").encode()))
    if longest + len(f"9/{ref.key}".encode()) > MAX_KEY_BYTES:
        raise KeyNotAllowed(f"key of {len(ref.key.encode())} bytes: its archive key would pass S3's "
                            f"{MAX_KEY_BYTES}-byte limit")


def is_own_archive_write(bucket: str, key: str, *, archive_bucket: str, archive_prefix: str,
                         review_prefix: str | None = None) -> bool:
    """Whether ``bucket/key`` is a copy the archiver made: ``<prefix><digit>/...``
    in the archive bucket, or ``<review_prefix><digit>/...`` while review is on.

    With an empty prefix every key of the archive bucket that starts with a
    digit and a slash counts, so the input bucket must not be the archive
    bucket unless the prefix tells them apart.
    """
    if bucket != archive_bucket:
        return False
    for prefix in (archive_prefix,) if review_prefix is None else (archive_prefix, review_prefix):
        rest = key[len(prefix) :]
        if key.startswith(prefix) and len(rest) > 2 and rest[0] in "0123456789" and rest[1] == "/":
            return True
    return False


def _load(raw: bytes | str | None) -> dict[str, Any]:
    if raw is None or len(raw) == 0:
        raise InvalidEvent("empty message")
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidEvent(f"message is not UTF-8: {exc}") from None
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidEvent(f"message is not JSON: {exc}") from None
    except RecursionError:
        raise InvalidEvent("message is not JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise InvalidEvent(f"message is JSON but not an object: {_show(doc)}")
    return doc


def _one(index: int, parse: Callable[[int, Any], Item], record: Any) -> Item:
    try:
        return parse(index, record)
    except _Bad as exc:
        return Invalid(str(exc), index)


def _record(index: int, record: Any) -> Item:
    """One entry of ``Records`` (MinIO or AWS S3)."""
    where = f"Records[{index}]"
    if not isinstance(record, dict):
        raise _Bad(f"{where}: expected an object, got {_show(record)}")
    name = _text(record, "eventName", where)
    if not name.startswith("s3:"):
        name = "s3:" + name
    if not name.startswith(CREATED_PREFIX) or name in METADATA_ONLY:
        return _skipped(name, record.get("s3"))
    s3 = _mapping(record, "s3", where)
    bucket = _text(_mapping(s3, "bucket", f"{where}.s3"), "name", f"{where}.s3.bucket")
    obj = _mapping(s3, "object", f"{where}.s3")
    owhere = f"{where}.s3.object"
    return ObjectRef(
        bucket=bucket,
        key=_decode_key(_text(obj, "key", owhere), f"{owhere}.key"),
        etag=_text(obj, "eTag", owhere, default="").strip('"'),
        version_id=_version(_text(obj, "versionId", owhere, default="")),
        size=_size(obj, owhere),
        event_name=name,
        event_time=_text(record, "eventTime", where, default=""),
    )


def _eventbridge(_index: int, doc: dict[str, Any]) -> Item:
    """An Amazon EventBridge event from S3 (``source`` already checked)."""
    kind = doc["detail-type"]
    if not isinstance(kind, str):
        raise _Bad(f"detail-type: expected a string, got {_show(kind)}")
    detail = _mapping(doc, "detail", "event")
    if kind != "Object Created":
        return _skipped(kind, detail)
    bucket = _text(_mapping(detail, "bucket", "detail"), "name", "detail.bucket")
    obj = _mapping(detail, "object", "detail")
    reason = _text(detail, "reason", "detail", default="")
    return ObjectRef(
        bucket=bucket,
        # URL-encoded like the S3 notifications' keys (AWS Lambda Powertools
        # decodes detail.object.key with unquote_plus too)
        key=_decode_key(_text(obj, "key", "detail.object"), "detail.object.key"),
        etag=_text(obj, "etag", "detail.object", default="").strip('"'),
        version_id=_version(_text(obj, "version-id", "detail.object", default="")),
        size=_size(obj, "detail.object"),
        event_name=EVENTBRIDGE_REASONS.get(reason, CREATED_PREFIX + "*"),
        event_time=_text(doc, "time", "event", default=""),
    )


def _skipped(name: str, s3: Any) -> Skipped:
    """A skipped record, naming its object when the record says so plainly."""
    reason = f"{name} (metadata only)" if name in METADATA_ONLY else name
    bucket = key = None
    if isinstance(s3, dict):
        if isinstance(s3.get("bucket"), dict) and isinstance(s3["bucket"].get("name"), str):
            bucket = s3["bucket"]["name"]
        if isinstance(s3.get("object"), dict) and isinstance(s3["object"].get("key"), str):
            try:
                key = _decode_key(s3["object"]["key"], "key")
            except _Bad:
                key = None
    return Skipped(reason, name, bucket=bucket, key=key)


def _skip_archive(item: Item, archive_bucket: str, archive_prefix: str, review_prefix: str | None) -> Item:
    if isinstance(item, ObjectRef) and is_own_archive_write(
        item.bucket, item.key, archive_bucket=archive_bucket, archive_prefix=archive_prefix,
        review_prefix=review_prefix,
    ):
        return Skipped("own archive write", item.event_name, bucket=item.bucket, key=item.key)
    return item


# -- field checks ----------------------------------------------------------------

_MISSING: Any = object()


def _mapping(parent: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
    value = parent.get(name, _MISSING)
    if value is _MISSING:
        raise _Bad(f"{where}.{name}: missing")
    if not isinstance(value, dict):
        raise _Bad(f"{where}.{name}: expected an object, got {_show(value)}")
    return value


def _text(parent: Mapping[str, Any], name: str, where: str, *, default: str | None = None) -> str:
    """A string field; with a default, also ``null`` or absent. Required ones must be non-empty."""
    value = parent.get(name)
    if value is None and default is not None:
        return default
    if value is None:
        raise _Bad(f"{where}.{name}: missing")
    if not isinstance(value, str):
        raise _Bad(f"{where}.{name}: expected a string, got {_show(value)}")
    if default is None and not value:
        raise _Bad(f"{where}.{name}: empty")
    return value


def _size(obj: Mapping[str, Any], where: str) -> int:
    value = obj.get("size")
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Bad(f"{where}.size: expected a non-negative integer, got {_show(value)}")
    return value


def _version(value: str) -> str:
    return "" if value == "null" else value


def _decode_key(encoded: str, where: str) -> str:
    if _BAD_ESCAPE.search(encoded):
        raise _Bad(f"{where}: malformed %-escape in {_show(encoded)}")
    try:
        key = unquote_plus(encoded, errors="strict")
        size = len(key.encode("utf-8"))
    except UnicodeError:
        raise _Bad(f"{where}: not UTF-8 once URL-decoded: {_show(encoded)}") from None
    if not key:
        raise _Bad(f"{where}: empty")
    if size > MAX_KEY_BYTES:
        raise _Bad(f"{where}: {size} bytes, over S3's limit of {MAX_KEY_BYTES}")
    return key


def _show(value: Any) -> str:
    """A short, safe rendering of an offending value for a reason string."""
    text = json.dumps(value, ensure_ascii=True, default=repr)
    kind = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}
    label = "null" if value is None else kind.get(type(value), type(value).__name__)
    text = text if len(text) <= 60 else text[:57] + "..."
    return text if label in {"null", "boolean"} else f"{label} {text}"
