"""MinIO's bucket notification, for objects uploaded where no MinIO publishes one.

The embedded S3 server has no notifications, so the embedded stack,
``streamapp upload`` and the bench publish, for each object they put, the
exact Kafka key and value MinIO's Kafka target would (the parser in
:mod:`streamapp.pipeline.events` reads them like any other).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, urlsplit

from streamapp.pipeline.events import CREATED_PREFIX
from streamapp.pipeline.records import ObjectRef

#: MinIO sends no eTag / size / content type for these (cmd/event-notification.go)
_MINIO_REMOVED = frozenset({"s3:ObjectRemoved:Delete", "s3:ObjectRemoved:DeleteMarkerCreated", "s3:ObjectRemoved:NoOP"})


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
    name = event_name or obj.event_name or CREATED_PREFIX + "Put"
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
