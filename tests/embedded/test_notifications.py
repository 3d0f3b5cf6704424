"""streamapp.embedded.notifications: the Kafka key and value MinIO would publish, byte for byte.

Pure, no servers; checked against a notification MinIO really sent
(``tests/fixtures/events/minio_put.json``) and read back by our parser.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from streamapp.embedded.notifications import minio_notification
from streamapp.pipeline.events import Skipped, parse_notification
from streamapp.pipeline.records import ObjectRef
from tests.support import event_fixture_doc

#: the x-amz-id-2 a single-node MinIO sends: SHA-256 of its node name 127.0.0.1:9000
SINGLE_NODE_ID = "dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8"


@pytest.mark.parametrize(
    ("key", "escaped"),
    [
        # what Go's url.QueryEscape wrote in notifications MinIO really sent
        ("Tile_+002_+002.mtl", "Tile_%2B002_%2B002.mtl"),
        ("PEDW/20230101/PEDW_DIAG2.csv", "PEDW%2F20230101%2FPEDW_DIAG2.csv"),
        ("Remark 插件测试/remark-comment.md", "Remark+%E6%8F%92%E4%BB%B6%E6%B5%8B%E8%AF%95%2Fremark-comment.md"),
        ("a.txt", "a.txt"),
        ("x-y_z.~", "x-y_z.~"),
    ],
)
def test_keys_are_escaped_like_go_query_escape(key: str, escaped: str) -> None:
    record = json.loads(minio_notification(ObjectRef(bucket="b", key=key))[1])["Records"][0]
    assert record["s3"]["object"]["key"] == escaped



WHEN = datetime(2024, 1, 5, 11, 26, 33, 408123, tzinfo=UTC)
WHEN_NANOS = "17A76FE05D165078"  # f"{1704453993408123000:X}"


def test_minio_notification_exact_bytes() -> None:
    ref = ObjectRef(bucket="mnist", key="batch 1/7+seven.png", etag="0f343b0931126a20f133d67c2b018a3b", size=1043)
    key, value = minio_notification(ref, now=WHEN)
    assert key == b"mnist/batch 1/7+seven.png"
    deployment = json.loads(value)["Records"][0]["responseElements"]["x-minio-deployment-id"]
    assert value.decode("utf-8") == (
        '{"EventName":"s3:ObjectCreated:Put","Key":"mnist/batch 1/7+seven.png","Records":[{'
        '"eventVersion":"2.0","eventSource":"minio:s3","awsRegion":"","eventTime":"2024-01-05T11:26:33.408Z",'
        '"eventName":"s3:ObjectCreated:Put","userIdentity":{"principalId":""},'
        '"requestParameters":{"principalId":"","region":"","sourceIPAddress":"127.0.0.1"},'
        f'"responseElements":{{"x-amz-id-2":"{SINGLE_NODE_ID}","x-amz-request-id":"{WHEN_NANOS}",'
        f'"x-minio-deployment-id":"{deployment}","x-minio-origin-endpoint":"http://127.0.0.1:9000"}},'
        '"s3":{"s3SchemaVersion":"1.0","configurationId":"Config","bucket":{"name":"mnist",'
        '"ownerIdentity":{"principalId":""},"arn":"arn:aws:s3:::mnist"},'
        '"object":{"key":"batch+1%2F7%2Bseven.png","size":1043,"eTag":"0f343b0931126a20f133d67c2b018a3b",'
        '"contentType":"image/png","userMetadata":{"content-type":"image/png"},'
        f'"sequencer":"{WHEN_NANOS}"}}}},'
        '"source":{"host":"127.0.0.1","port":"","userAgent":"streamapp"}}]}'
    )
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", deployment)


def test_minio_notification_has_the_fields_minio_sends() -> None:
    """Same field names, nesting and order as a notification MinIO really sent (our fixture)."""
    ours = json.loads(minio_notification(ObjectRef(bucket="b", key="k", etag="e", size=1), now=WHEN)[1])
    theirs = event_fixture_doc("minio_put.json")

    def shape(node: Any) -> Any:
        if isinstance(node, dict):
            return [(name, shape(value)) for name, value in node.items()]
        if isinstance(node, list):
            return [shape(value) for value in node]
        return type(node).__name__

    ours_record, theirs_record = ours["Records"][0], theirs["Records"][0]
    ours_record["s3"]["object"]["userMetadata"] = theirs_record["s3"]["object"]["userMetadata"] = {}
    assert shape(ours) == shape(theirs)


@pytest.mark.parametrize(
    "ref",
    [
        ObjectRef(bucket="mnist", key="7.png", etag="abc", size=10, event_name="s3:ObjectCreated:Put"),
        ObjectRef(bucket="mnist", key="a/b c+d.png", etag="abc", size=10, event_name="s3:ObjectCreated:Put"),
        ObjectRef(
            bucket="mnist",
            key="été/数字 3.png",
            etag="e-2",
            version_id="v1",
            size=5,
            event_name="s3:ObjectCreated:CompleteMultipartUpload",
        ),
        ObjectRef(bucket="mnist", key="<&>\u2028%25 ~.png", etag="abc", size=1, event_name="s3:ObjectCreated:Copy"),
        ObjectRef(bucket="mnist", key="k" * 1024, etag="abc", size=1, event_name="s3:ObjectCreated:Post"),
        ObjectRef(
            bucket="mnist",
            key="x.png",
            etag="abc",
            size=3,
            event_name="s3:ObjectCreated:Put",
            event_time="2023-07-31T07:44:17.447Z",
        ),
    ],
)
def test_minio_notification_round_trip(ref: ObjectRef) -> None:
    key, value = minio_notification(ref, now=WHEN)
    (parsed,) = parse_notification(value)
    expected_time = ref.event_time or "2024-01-05T11:26:33.408Z"
    assert parsed == ObjectRef(**{**ref.asdict(), "event_time": expected_time})
    assert key == parsed.path.encode("utf-8")


def test_minio_notification_is_go_json() -> None:
    """Compact, non-ASCII kept as UTF-8, and <, >, & and U+2028 escaped as Go's encoding/json does."""
    _, value = minio_notification(ObjectRef(bucket="b", key="é<&>\u2028.png"), now=WHEN)
    text = value.decode("utf-8")
    assert '"Key":"b/é\\u003c\\u0026\\u003e\\u2028.png"' in text
    assert ": " not in text and ", " not in text
    assert json.loads(value)["Key"] == "b/é<&>\u2028.png"


def test_minio_notification_omits_empty_fields_like_go() -> None:
    """size, eTag and versionId are omitempty: a zero-byte object reads back with size -1."""
    _, value = minio_notification(ObjectRef(bucket="b", key="k", size=0), content_type="", now=WHEN)
    obj = json.loads(value)["Records"][0]["s3"]["object"]
    assert obj == {"key": "k", "sequencer": WHEN_NANOS}
    assert parse_notification(value)[0].size == -1


def test_minio_notification_for_a_removal_has_no_object_details() -> None:
    ref = ObjectRef(bucket="b", key="k", etag="e", size=4, version_id="v")
    _, value = minio_notification(ref, event_name="s3:ObjectRemoved:Delete", now=WHEN)
    doc = json.loads(value)
    assert doc["EventName"] == "s3:ObjectRemoved:Delete"
    assert doc["Records"][0]["s3"]["object"] == {"key": "k", "versionId": "v", "sequencer": WHEN_NANOS}
    assert parse_notification(value) == [
        Skipped("s3:ObjectRemoved:Delete", "s3:ObjectRemoved:Delete", bucket="b", key="k")
    ]


def test_minio_notification_options() -> None:
    ref = ObjectRef(bucket="b", key="k", event_name="s3:ObjectCreated:Copy")
    _, value = minio_notification(
        ref,
        region="eu-central-1",
        endpoint="https://minio.example:9443",
        content_type="image/jpeg",
        principal_id="uploader",
        source_ip="10.1.2.3",
        user_agent="test-agent",
        now=WHEN,
    )
    record = json.loads(value)["Records"][0]
    assert record["eventName"] == "s3:ObjectCreated:Copy"
    assert record["awsRegion"] == record["requestParameters"]["region"] == "eu-central-1"
    assert record["userIdentity"] == record["s3"]["bucket"]["ownerIdentity"] == {"principalId": "uploader"}
    assert record["requestParameters"]["sourceIPAddress"] == record["source"]["host"] == "10.1.2.3"
    assert record["source"] == {"host": "10.1.2.3", "port": "", "userAgent": "test-agent"}
    assert record["s3"]["object"]["contentType"] == "image/jpeg"
    assert record["s3"]["object"]["userMetadata"] == {"content-type": "image/jpeg"}
    elements = record["responseElements"]
    assert elements["x-minio-origin-endpoint"] == "https://minio.example:9443"
    assert elements["x-amz-id-2"] == hashlib.sha256(b"minio.example:9443").hexdigest()
    # the deployment id is stable for one endpoint, as it is for one MinIO deployment
    again = json.loads(minio_notification(ref, endpoint="https://minio.example:9443", now=WHEN)[1])
    assert again["Records"][0]["responseElements"]["x-minio-deployment-id"] == elements["x-minio-deployment-id"]
    assert minio_notification(ref, event_name="s3:ObjectCreated:Post", now=WHEN)[1].startswith(
        b'{"EventName":"s3:ObjectCreated:Post"'
    )


def test_minio_notification_time_and_sequencer() -> None:
    """eventTime in AMZTimeFormat (milliseconds, Z); sequencer and request id are upper-case hex nanoseconds."""
    local = WHEN.astimezone(timezone(timedelta(hours=5, minutes=30)))
    record = json.loads(minio_notification(ObjectRef(bucket="b", key="k"), now=local)[1])["Records"][0]
    assert record["eventTime"] == "2024-01-05T11:26:33.408Z"
    assert record["s3"]["object"]["sequencer"] == record["responseElements"]["x-amz-request-id"] == WHEN_NANOS
    assert int(WHEN_NANOS, 16) == 1704453993408123000

    before = datetime.now(UTC)
    record = json.loads(minio_notification(ObjectRef(bucket="b", key="k"))[1])["Records"][0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["eventTime"])
    assert re.fullmatch(r"[0-9A-F]{16}", record["s3"]["object"]["sequencer"])
    assert int(record["s3"]["object"]["sequencer"], 16) >= int(before.timestamp()) * 10**9
    assert record["responseElements"]["x-amz-id-2"] == SINGLE_NODE_ID
