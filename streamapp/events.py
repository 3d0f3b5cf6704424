"""Bucket notifications -> object references, and back (pure: no I/O).

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

* :class:`~streamapp.records.ObjectRef` -- a new object version to process;
* :class:`Skipped` -- a record that is fine but not ours to process (removals,
  reads, tagging / retention / legal-hold changes, test events, replication,
  lifecycle, and the pipeline's own archive writes); counted, not an error;
* :class:`Invalid` -- one unusable record, with a reason, bound for the
  dead-letter topic. Its siblings are still returned.

:func:`parse_notification` raises :class:`~streamapp.errors.InvalidEvent`
only when no record can be told apart: the message is not UTF-8, not JSON,
not of a known schema, or its ``Records`` is not a non-empty list.

:func:`minio_notification` goes the other way: the exact Kafka key and value
MinIO's notifier would publish for an object (``streamapp upload`` stands in
for it in front of S3 servers that have no notifications).

Object keys arrive URL-encoded the way Go's ``url.QueryEscape`` and Python's
``quote_plus`` write them (space as ``+``, ``/`` as ``%2F``, UTF-8 bytes as
``%XX``); :class:`ObjectRef` always holds the decoded key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, unquote_plus, urlsplit

from streamapp.errors import InvalidEvent
from streamapp.records import ObjectRef

__all__ = [
    "Invalid",
    "Item",
    "Skipped",
    "is_own_archive_write",
    "minio_notification",
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

#: MinIO sends no eTag / size / content type for these (cmd/event-notification.go)
_MINIO_REMOVED = frozenset({"s3:ObjectRemoved:Delete", "s3:ObjectRemoved:DeleteMarkerCreated", "s3:ObjectRemoved:NoOP"})

_CREATED = "s3:ObjectCreated:"
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
    raw: bytes | str | None, *, archive_bucket: str | None = None, archive_prefix: str = ""
) -> list[Item]:
    """Every record of one notification as an ObjectRef, Skipped or Invalid.

    With ``archive_bucket`` set, objects the archiver wrote (see
    :func:`is_own_archive_write`) come back as ``Skipped("own archive write")``
    so the pipeline never classifies its own output.
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
        items = [_skip_archive(item, archive_bucket, archive_prefix) for item in items]
    return items


def is_own_archive_write(bucket: str, key: str, *, archive_bucket: str, archive_prefix: str) -> bool:
    """Whether ``bucket/key`` is a copy the archiver made: ``<prefix><digit>/...`` in the archive bucket.

    With an empty prefix every key of the archive bucket that starts with a
    digit and a slash counts, so the input bucket must not be the archive
    bucket unless the prefix tells them apart.
    """
    if bucket != archive_bucket or not key.startswith(archive_prefix):
        return False
    rest = key[len(archive_prefix) :]
    return len(rest) > 2 and rest[0] in "0123456789" and rest[1] == "/"


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
    if not name.startswith(_CREATED) or name in METADATA_ONLY:
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
        event_name=EVENTBRIDGE_REASONS.get(reason, _CREATED + "*"),
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


def _skip_archive(item: Item, archive_bucket: str, archive_prefix: str) -> Item:
    if isinstance(item, ObjectRef) and is_own_archive_write(
        item.bucket, item.key, archive_bucket=archive_bucket, archive_prefix=archive_prefix
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


# -- MinIO's notification, for objects we upload ourselves ------------------------


def minio_notification(
    obj: ObjectRef,
    *,
    event_name: str | None = None,
    region: str = "",
    endpoint: str = "http://127.0.0.1:9000",
    content_type: str = "image/png",
    principal_id: str = "",
    source_ip: str = "127.0.0.1",
    user_agent: str = "streamapp",
    now: datetime | None = None,
) -> tuple[bytes, bytes]:
    """``(kafka_key, kafka_value)`` exactly as MinIO's Kafka target would publish them.

    Follows MinIO's ``eventArgs.ToEvent`` and ``KafkaTarget.send``: the value is
    ``{"EventName", "Key", "Records": [event]}`` marshalled by Go's
    ``encoding/json`` (compact, map keys sorted, ``<>&`` escaped, UTF-8 kept),
    the key is ``bucket/key`` unescaped. ``event_name`` defaults to
    ``obj.event_name`` or ``s3:ObjectCreated:Put``; ``eventTime`` is
    ``obj.event_time`` when set, else ``now`` (default: the clock) with
    millisecond precision. ``x-amz-request-id`` and ``sequencer`` are the
    upper-case hex nanoseconds of ``now`` as MinIO makes them; the deployment
    id is stable per endpoint, and ``x-amz-id-2`` is the SHA-256 of the
    server's ``host:port`` as for a single-node MinIO.

    Go's ``omitempty`` drops ``size`` 0 and ``eTag`` / ``versionId`` "", so a
    zero-byte or unknown-size object parses back with ``size`` -1.
    """
    name = event_name or obj.event_name or _CREATED + "Put"
    when = (now or datetime.now(UTC)).astimezone(UTC)
    nanos = f"{_unix_nanos(when):X}"
    node = urlsplit(endpoint).netloc or endpoint
    identity = {"principalId": principal_id}
    record_object: dict[str, Any] = {"key": quote_plus(obj.key, safe="")}
    if name not in _MINIO_REMOVED:
        if obj.size > 0:
            record_object["size"] = obj.size
        if obj.etag:
            record_object["eTag"] = obj.etag.strip('"')
        if content_type:
            record_object["contentType"] = content_type
            record_object["userMetadata"] = {"content-type": content_type}
    if obj.version_id:
        record_object["versionId"] = obj.version_id
    record_object["sequencer"] = nanos
    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": region,
        "eventTime": obj.event_time or _amz_time(when),
        "eventName": name,
        "userIdentity": identity,
        "requestParameters": _go_map({"principalId": principal_id, "region": region, "sourceIPAddress": source_ip}),
        "responseElements": _go_map(
            {
                "x-amz-request-id": nanos,
                "x-amz-id-2": hashlib.sha256(node.encode("utf-8")).hexdigest(),
                "x-minio-origin-endpoint": endpoint,
                "x-minio-deployment-id": str(uuid.uuid5(uuid.NAMESPACE_URL, endpoint)),
            }
        ),
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {"name": obj.bucket, "ownerIdentity": identity, "arn": "arn:aws:s3:::" + obj.bucket},
            "object": record_object,
        },
        "source": {"host": source_ip, "port": "", "userAgent": user_agent},
    }
    path = f"{obj.bucket}/{obj.key}"
    value = {"EventName": name, "Key": path, "Records": [record]}
    return path.encode("utf-8"), _go_json(value).encode("utf-8")


def _go_map(values: Mapping[str, str]) -> dict[str, str]:
    """Go marshals a map with its keys sorted."""
    return dict(sorted(values.items()))


def _go_json(value: Any) -> str:
    """``json.Marshal``'s output: compact, UTF-8, with ``<``, ``>``, ``&``, U+2028/9 escaped."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return _GO_ESCAPES.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


_GO_ESCAPES = re.compile("[<>&\u2028\u2029]")


def _amz_time(when: datetime) -> str:
    """MinIO's ``event.AMZTimeFormat``: ``2006-01-02T15:04:05.000Z``."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _unix_nanos(when: datetime) -> int:
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
