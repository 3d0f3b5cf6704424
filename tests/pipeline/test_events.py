"""streamapp.pipeline.events: notification JSON -> ObjectRef / Skipped / Invalid.

Pure functions, no servers. The fixtures under ``fixtures/events`` have the
exact shape MinIO (Kafka target), AWS S3 and EventBridge publish, with our own
bucket names, keys and ids.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any
from urllib.parse import quote_plus

import pytest

from streamapp import errors
from streamapp.errors import InvalidEvent
from streamapp.pipeline.events import (
    EVENTBRIDGE_REASONS,
    METADATA_ONLY,
    Invalid,
    Skipped,
    check_source,
    is_own_archive_write,
    parse_notification,
)
from streamapp.pipeline.records import ObjectRef
from tests.support import event_fixture, event_fixture_doc


def encode(doc: Any) -> bytes:
    return json.dumps(doc).encode("utf-8")


def minio_record(**object_fields: Any) -> dict[str, Any]:
    """The record of minio_put.json, with object fields replaced (None removes one)."""
    record = copy.deepcopy(event_fixture_doc("minio_put.json")["Records"][0])
    for name, value in object_fields.items():
        if value is None:
            record["s3"]["object"].pop(name, None)
        else:
            record["s3"]["object"][name] = value
    return record


def aws_record(event_name: str = "ObjectCreated:Put", key: str = "a.png") -> dict[str, Any]:
    record = copy.deepcopy(event_fixture_doc("aws_put_copy.json")["Records"][0])
    record["eventName"] = event_name
    record["s3"]["object"]["key"] = key
    return record


def eventbridge(**changes: Any) -> dict[str, Any]:
    doc = event_fixture_doc("eventbridge_object_created.json")
    for name, value in changes.items():
        doc["detail"]["object"][name] = value
    return doc


def parse_one(record: dict[str, Any], **kwargs: Any):
    (item,) = parse_notification(encode({"Records": [record]}), **kwargs)
    return item


# -- every shape -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "minio_put.json",
            [
                ObjectRef(
                    bucket="mnist",
                    key="batch 1/7+seven.png",
                    etag="0f343b0931126a20f133d67c2b018a3b",
                    version_id="",
                    size=1043,
                    event_name="s3:ObjectCreated:Put",
                    event_time="2024-03-18T09:41:07.512Z",
                )
            ],
        ),
        (
            "minio_multipart_versioned.json",
            [
                ObjectRef(
                    bucket="mnist",
                    key="été/数字 3.png",
                    etag="9b2cf535f27731c974343645a3985328-2",
                    version_id="8d3f3c1a-6b0e-4f5d-9c2a-7e1b0d4c3a21",
                    size=6291456,
                    event_name="s3:ObjectCreated:CompleteMultipartUpload",
                    event_time="2024-10-02T17:05:44.090Z",
                )
            ],
        ),
        (
            "minio_delete_marker.json",
            [
                Skipped(
                    "s3:ObjectRemoved:DeleteMarkerCreated",
                    "s3:ObjectRemoved:DeleteMarkerCreated",
                    bucket="mnist",
                    key="batch 1/7+seven.png",
                )
            ],
        ),
        (
            "minio_put_tagging.json",
            [
                Skipped(
                    "s3:ObjectCreated:PutTagging (metadata only)",
                    "s3:ObjectCreated:PutTagging",
                    bucket="mnist",
                    key="batch 1/7+seven.png",
                )
            ],
        ),
        (
            "aws_put_copy.json",
            [
                ObjectRef(
                    bucket="digits-inbox",
                    key="scans/2024-05-02/form 12=five.png",
                    etag="d41d8cd98f00b204e9800998ecf8427e",
                    version_id="096fKKXTRTtl3on89fVO.nfljtsv6qko",
                    size=2210,
                    event_name="s3:ObjectCreated:Put",
                    event_time="2024-05-02T14:56:58.372Z",
                ),
                ObjectRef(
                    bucket="digits-inbox",
                    key="copies/été.png",
                    etag="d41d8cd98f00b204e9800998ecf8427e",
                    version_id="",
                    size=2210,
                    event_name="s3:ObjectCreated:Copy",
                    event_time="2024-05-02T14:56:59.001Z",
                ),
            ],
        ),
        ("aws_test_event.json", [Skipped("s3:TestEvent", "s3:TestEvent", bucket="digits-inbox")]),
        (
            "eventbridge_object_created.json",
            [
                ObjectRef(
                    bucket="digits-inbox",
                    key="scans/big scan.png",
                    etag="4af981f98d22a0b9979da24b259e5e42-3",
                    version_id="uhggCJ2_B6gU2JaXWXebnXFDstO0ID6G",
                    size=15728640,
                    event_name="s3:ObjectCreated:CompleteMultipartUpload",
                    event_time="2024-05-02T14:57:03Z",
                )
            ],
        ),
        (
            "eventbridge_object_deleted.json",
            [Skipped("Object Deleted", "Object Deleted", bucket="digits-inbox", key="scans/big scan.png")],
        ),
    ],
)
def test_fixture_shapes(name: str, expected: list) -> None:
    assert parse_notification(event_fixture(name)) == expected


@pytest.mark.parametrize("as_type", [bytes, str, bytearray])
def test_accepts_bytes_and_text(as_type: type) -> None:
    raw = event_fixture("minio_put.json")
    value = raw.decode("utf-8") if as_type is str else as_type(raw)
    assert parse_notification(value) == parse_notification(raw)


def test_minio_kafka_key_matches_decoded_record() -> None:
    """MinIO's Kafka message key is bucket + "/" + the unescaped key: the path of our ObjectRef."""
    for name in ("minio_put.json", "minio_multipart_versioned.json"):
        (ref,) = parse_notification(event_fixture(name))
        assert event_fixture_doc(name)["Key"] == ref.path


# -- keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("a%2Fb+c.png", "a/b c.png"),
        ("a%2Bb.png", "a+b.png"),
        ("%C3%A9t%C3%A9.png", "été.png"),
        ("%c3%a9t%c3%a9.png", "été.png"),
        ("Tile_%2B002_%2B002.mtl", "Tile_+002_+002.mtl"),
        ("Remark+%E6%8F%92%E4%BB%B6%E6%B5%8B%E8%AF%95%2Fremark-comment.md", "Remark 插件测试/remark-comment.md"),
        ("PEDW%2F20230101%2FPEDW_DIAG2.csv", "PEDW/20230101/PEDW_DIAG2.csv"),
        ("d/d7/raw-slashes.png", "d/d7/raw-slashes.png"),
        ("plain-name_1.2~x.png", "plain-name_1.2~x.png"),
        ("100%25.png", "100%.png"),
        ("a++b", "a  b"),
        ("%F0%9F%98%80.png", "\U0001f600.png"),
        ("%3C%26%3E", "<&>"),
    ],
)
def test_keys_are_url_decoded(encoded: str, decoded: str) -> None:
    assert parse_one(minio_record(key=encoded)).key == decoded
    assert parse_one(aws_record(key=encoded)).key == decoded
    (ref,) = parse_notification(encode(eventbridge(key=encoded)))
    assert ref.key == decoded


def test_key_length_limit_is_1024_utf8_bytes() -> None:
    assert parse_one(minio_record(key="k" * 1024)).key == "k" * 1024
    assert parse_one(minio_record(key=quote_plus("é" * 512))).key == "é" * 512
    too_long = parse_one(minio_record(key=quote_plus("é" * 512 + "x")))
    assert too_long == Invalid("Records[0].s3.object.key: 1025 bytes, over S3's limit of 1024", 0)


# -- event names -------------------------------------------------------------------------

CREATED = ["Put", "Post", "Copy", "CompleteMultipartUpload"]


@pytest.mark.parametrize("prefix", ["s3:", ""])
@pytest.mark.parametrize("kind", CREATED)
def test_every_data_event_is_processed(prefix: str, kind: str) -> None:
    ref = parse_one(aws_record(f"{prefix}ObjectCreated:{kind}"))
    assert isinstance(ref, ObjectRef)
    assert ref.event_name == f"s3:ObjectCreated:{kind}"


def test_an_unknown_created_event_is_processed() -> None:
    """Every ObjectCreated:* is accepted; a future one reprocesses at worst, and the tally is idempotent."""
    ref = parse_one(aws_record("s3:ObjectCreated:Rename"))
    assert isinstance(ref, ObjectRef)
    assert ref.event_name == "s3:ObjectCreated:Rename"


@pytest.mark.parametrize("name", sorted(METADATA_ONLY))
@pytest.mark.parametrize("prefixed", [True, False])
def test_metadata_only_events_are_skipped(name: str, prefixed: bool) -> None:
    item = parse_one(aws_record(name if prefixed else name.removeprefix("s3:"), key="a%2Fb+c.png"))
    assert item == Skipped(f"{name} (metadata only)", name, bucket="digits-inbox", key="a/b c.png")


# MinIO's internal/event/name.go, and AWS's event types (without the s3: prefix)
OTHER_EVENTS = [
    "s3:ObjectAccessed:Get",
    "s3:ObjectAccessed:GetRetention",
    "s3:ObjectAccessed:GetLegalHold",
    "s3:ObjectAccessed:Head",
    "s3:ObjectAccessed:Attributes",
    "s3:ObjectRemoved:Delete",
    "s3:ObjectRemoved:DeleteMarkerCreated",
    "s3:ObjectRemoved:DeleteAllVersions",
    "s3:ObjectRemoved:NoOP",
    "s3:LifecycleDelMarkerExpiration:Delete",
    "s3:BucketCreated:*",
    "s3:BucketRemoved:*",
    "s3:Replication:OperationFailedReplication",
    "s3:Replication:OperationCompletedReplication",
    "s3:Replication:OperationMissedThreshold",
    "s3:Replication:OperationReplicatedAfterThreshold",
    "s3:Replication:OperationNotTracked",
    "s3:ObjectRestore:Post",
    "s3:ObjectRestore:Completed",
    "s3:ObjectTransition:Failed",
    "s3:ObjectTransition:Complete",
    "s3:Scanner:ManyVersions",
    "s3:Scanner:LargeVersions",
    "s3:Scanner:BigPrefix",
    "ObjectRemoved:Delete",
    "ObjectRemoved:DeleteMarkerCreated",
    "ObjectRestore:Post",
    "ObjectRestore:Completed",
    "ObjectRestore:Delete",
    "ReducedRedundancyLostObject",
    "Replication:OperationFailedReplication",
    "LifecycleExpiration:Delete",
    "LifecycleExpiration:DeleteMarkerCreated",
    "LifecycleTransition",
    "IntelligentTiering",
    "ObjectTagging:Put",
    "ObjectTagging:Delete",
    "ObjectAcl:Put",
]


@pytest.mark.parametrize("name", OTHER_EVENTS)
def test_other_events_are_skipped_under_their_name(name: str) -> None:
    normalized = name if name.startswith("s3:") else "s3:" + name
    item = parse_one(aws_record(name))
    assert item == Skipped(normalized, normalized, bucket="digits-inbox", key="a.png")


def test_skipped_records_need_no_object_details() -> None:
    """A removal with an odd or missing s3 section is still just a removal."""
    for s3 in (None, [], {"bucket": "x", "object": {"key": 5}}, {"object": {"key": "%zz"}}):
        record = {"eventName": "s3:ObjectRemoved:Delete", "s3": s3}
        assert parse_one(record) == Skipped("s3:ObjectRemoved:Delete", "s3:ObjectRemoved:Delete")


# -- EventBridge -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "event_name"), [*EVENTBRIDGE_REASONS.items(), ("SomethingNew", "s3:ObjectCreated:*")]
)
def test_eventbridge_reason_names_the_event(reason: str, event_name: str) -> None:
    doc = eventbridge()
    doc["detail"]["reason"] = reason
    (ref,) = parse_notification(encode(doc))
    assert ref.event_name == event_name


def test_eventbridge_without_optional_fields() -> None:
    doc = eventbridge()
    for name in ("size", "etag", "version-id", "sequencer"):
        del doc["detail"]["object"][name]
    del doc["detail"]["reason"]
    del doc["time"]
    (ref,) = parse_notification(encode(doc))
    assert ref == ObjectRef(bucket="digits-inbox", key="scans/big scan.png", event_name="s3:ObjectCreated:*")


@pytest.mark.parametrize(
    "kind",
    [
        "Object Deleted",
        "Object Restore Completed",
        "Object Tags Added",
        "Object ACL Updated",
        "Object Storage Class Changed",
    ],
)
def test_other_eventbridge_types_are_skipped(kind: str) -> None:
    doc = eventbridge()
    doc["detail-type"] = kind
    assert parse_notification(encode(doc)) == [Skipped(kind, kind, bucket="digits-inbox", key="scans/big scan.png")]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"key": 7}, "detail.object.key: expected a string, got integer 7"),
        ({"key": ""}, "detail.object.key: empty"),
        ({"size": "5"}, 'detail.object.size: expected a non-negative integer, got string "5"'),
        ({"etag": ["x"]}, 'detail.object.etag: expected a string, got array ["x"]'),
    ],
)
def test_eventbridge_invalid_fields(change: dict[str, Any], reason: str) -> None:
    assert parse_notification(encode(eventbridge(**change))) == [Invalid(reason, 0)]


def test_eventbridge_missing_bucket_and_object() -> None:
    doc = eventbridge()
    del doc["detail"]["bucket"]
    assert parse_notification(encode(doc)) == [Invalid("detail.bucket: missing", 0)]
    doc = eventbridge()
    doc["detail"]["object"] = None
    assert parse_notification(encode(doc)) == [Invalid("detail.object: expected an object, got null", 0)]


# -- field values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"eTag": '"0f34"'}, {"etag": "0f34"}),
        ({"eTag": None}, {"etag": ""}),
        ({"versionId": "null"}, {"version_id": ""}),
        ({"versionId": "3HL4kqtJ"}, {"version_id": "3HL4kqtJ"}),
        ({"size": None}, {"size": -1}),
        ({"size": 0}, {"size": 0}),
        ({"size": 5 * 2**40}, {"size": 5 * 2**40}),
    ],
)
def test_optional_object_fields(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    ref = parse_one(minio_record(**fields))
    for name, value in expected.items():
        assert getattr(ref, name) == value


def test_null_optional_fields_read_as_absent() -> None:
    record = minio_record()
    record["s3"]["object"].update(eTag=None, versionId=None, size=None)
    record["eventTime"] = None
    ref = parse_one(record)
    assert (ref.etag, ref.version_id, ref.size, ref.event_time) == ("", "", -1, "")


# -- invalid records: dead-lettered one by one ---------------------------------------------------------


def _without(path: str) -> dict[str, Any]:
    record = minio_record()
    *parents, last = path.split(".")
    node = record
    for name in parents:
        node = node[name]
    del node[last]
    return record


def _with(path: str, value: Any) -> dict[str, Any]:
    record = minio_record()
    *parents, last = path.split(".")
    node = record
    for name in parents:
        node = node[name]
    node[last] = value
    return record


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ("just a string", 'Records[0]: expected an object, got string "just a string"'),
        (None, "Records[0]: expected an object, got null"),
        ([1, 2], "Records[0]: expected an object, got array [1, 2]"),
        (_without("eventName"), "Records[0].eventName: missing"),
        (_with("eventName", 5), "Records[0].eventName: expected a string, got integer 5"),
        (_with("eventName", ""), "Records[0].eventName: empty"),
        (_without("s3"), "Records[0].s3: missing"),
        (_with("s3", []), "Records[0].s3: expected an object, got array []"),
        (_without("s3.bucket"), "Records[0].s3.bucket: missing"),
        (_without("s3.bucket.name"), "Records[0].s3.bucket.name: missing"),
        (_with("s3.bucket.name", 3), "Records[0].s3.bucket.name: expected a string, got integer 3"),
        (_with("s3.bucket.name", ""), "Records[0].s3.bucket.name: empty"),
        (_without("s3.object"), "Records[0].s3.object: missing"),
        (_with("s3.object", "k"), 'Records[0].s3.object: expected an object, got string "k"'),
        (_without("s3.object.key"), "Records[0].s3.object.key: missing"),
        (_with("s3.object.key", None), "Records[0].s3.object.key: missing"),
        (_with("s3.object.key", 12), "Records[0].s3.object.key: expected a string, got integer 12"),
        (_with("s3.object.key", {"a": 1}), 'Records[0].s3.object.key: expected a string, got object {"a": 1}'),
        (_with("s3.object.key", ""), "Records[0].s3.object.key: empty"),
        (_with("s3.object.key", "%2F%"), 'Records[0].s3.object.key: malformed %-escape in string "%2F%"'),
        (_with("s3.object.key", "a%zzb"), 'Records[0].s3.object.key: malformed %-escape in string "a%zzb"'),
        (_with("s3.object.key", "%FF.png"), 'Records[0].s3.object.key: not UTF-8 once URL-decoded: string "%FF.png"'),
        (
            _with("s3.object.key", "\ud800.png"),
            'Records[0].s3.object.key: not UTF-8 once URL-decoded: string "\\ud800.png"',
        ),
        (
            _with("s3.object.size", "1043"),
            'Records[0].s3.object.size: expected a non-negative integer, got string "1043"',
        ),
        (_with("s3.object.size", 10.5), "Records[0].s3.object.size: expected a non-negative integer, got number 10.5"),
        (_with("s3.object.size", -3), "Records[0].s3.object.size: expected a non-negative integer, got integer -3"),
        (_with("s3.object.size", True), "Records[0].s3.object.size: expected a non-negative integer, got true"),
        (_with("s3.object.eTag", 123), "Records[0].s3.object.eTag: expected a string, got integer 123"),
        (_with("s3.object.versionId", 1), "Records[0].s3.object.versionId: expected a string, got integer 1"),
        (_with("eventTime", 1700000000), "Records[0].eventTime: expected a string, got integer 1700000000"),
    ],
)
def test_invalid_records(record: Any, reason: str) -> None:
    assert parse_notification(encode({"Records": [record]})) == [Invalid(reason, 0)]


def test_long_offending_values_are_shortened() -> None:
    (item,) = parse_notification(encode({"Records": ["x" * 500]}))
    assert isinstance(item, Invalid)
    assert len(item.reason) < 120
    assert item.reason.endswith("...")


def test_one_bad_record_does_not_lose_its_siblings() -> None:
    good = minio_record()
    bad = _with("s3.object.size", "big")
    removed = aws_record("ObjectRemoved:Delete")
    other = aws_record("ObjectCreated:Post", key="b%2Fc.png")
    items = parse_notification(encode({"Records": [good, bad, removed, other]}))
    assert [type(item) for item in items] == [ObjectRef, Invalid, Skipped, ObjectRef]
    assert items[1] == Invalid('Records[1].s3.object.size: expected a non-negative integer, got string "big"', 1)
    assert items[3].key == "b/c.png"
    # one item per record, in order: the list position is the record's index
    assert all(item.index == position for position, item in enumerate(items) if isinstance(item, Invalid))


def test_many_records() -> None:
    records = [aws_record(key=f"img-{n}.png") for n in range(250)]
    items = parse_notification(encode({"Records": records}))
    assert [item.key for item in items] == [f"img-{n}.png" for n in range(250)]


# -- invalid messages: dead-lettered whole -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty message"),
        (b"", "empty message"),
        ("", "empty message"),
        (b"\xff\xfe{}", "message is not UTF-8"),
        (b'{"Records": "\xc3\x28"}', "message is not UTF-8"),
        (b"not json", "message is not JSON"),
        (b'{"Records": [', "message is not JSON"),
        (b"{'single': 'quotes'}", "message is not JSON"),
        (b"[" * 100_000, "message is not JSON"),
        (b"[1, 2]", "message is JSON but not an object: array [1, 2]"),
        (b'"s3:ObjectCreated:Put"', 'message is JSON but not an object: string "s3:ObjectCreated:Put"'),
        (b"null", "message is JSON but not an object: null"),
        (b"42", "message is JSON but not an object: integer 42"),
        (b"{}", "no known notification schema (top-level keys: [])"),
        (b'{"EventName": "s3:ObjectCreated:Put", "Key": "b/k"}', "no known notification schema"),
        (b'{"Service": "Amazon S3", "Event": "s3:Other"}', "no known notification schema"),
        (b'{"Records": []}', "Records must be a non-empty list, got array []"),
        (b'{"Records": null}', "Records must be a non-empty list, got null"),
        (b'{"Records": {"eventName": "x"}}', "Records must be a non-empty list, got object"),
        (b'{"Records": "x"}', "Records must be a non-empty list, got string"),
        (
            b'{"detail-type": "Object Created", "source": "my.app", "detail": {}}',
            "EventBridge event from source string \"my.app\", expected 'aws.s3'",
        ),
    ],
)
def test_invalid_messages(raw: Any, reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_notification(raw)
    assert str(caught.value).startswith(reason)
    assert caught.value.kind == "invalid_event"


# -- the pipeline's own archive writes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bucket", "key", "prefix", "own"),
    [
        ("digits", "3/a.png", "", True),
        ("digits", "0/batch 1/7+seven.png", "", True),
        ("digits", "9/x", "", True),
        ("digits", "a/3/x.png", "", False),
        ("digits", "10/x.png", "", False),
        ("digits", "3-x.png", "", False),
        ("digits", "3/", "", False),
        ("digits", "3", "", False),
        ("mnist", "3/a.png", "", False),
        ("digits", "archive/3/a.png", "archive/", True),
        ("digits", "archive/x/a.png", "archive/", False),
        ("digits", "3/a.png", "archive/", False),
        ("digits", "archive3/a.png", "archive/", False),
        ("digits", "labelled-7/a.png", "labelled-", True),
        ("digits", "٣/a.png", "", False),
    ],
)
def test_is_own_archive_write(bucket: str, key: str, prefix: str, own: bool) -> None:
    assert is_own_archive_write(bucket, key, archive_bucket="digits", archive_prefix=prefix) is own


def test_own_archive_writes_are_skipped() -> None:
    records = [
        minio_record(key=quote_plus("7/batch 1/7+seven.png", safe="")),
        minio_record(key="batch+1%2F7%2Bseven.png"),
    ]
    raw = encode({"Records": records})
    own, other = parse_notification(raw, archive_bucket="mnist", archive_prefix="")
    assert own == Skipped("own archive write", "s3:ObjectCreated:Put", bucket="mnist", key="7/batch 1/7+seven.png")
    assert isinstance(other, ObjectRef)
    assert parse_notification(raw, archive_bucket="digits", archive_prefix="") == parse_notification(raw)
    assert parse_notification(raw, archive_bucket=None) == parse_notification(raw)
    assert parse_notification(raw, archive_bucket="") == parse_notification(raw)


def test_archive_skip_leaves_skipped_and_invalid_items_alone() -> None:
    removal = aws_record("ObjectRemoved:Delete", key="3%2Fa.png")
    bad = _with("s3.object.size", "x")
    items = parse_notification(encode({"Records": [removal, bad]}), archive_bucket="digits-inbox")
    assert items[0].reason == "s3:ObjectRemoved:Delete"
    assert isinstance(items[1], Invalid)


# -- which objects the workers may read and archive ------------------------------------


def _ref(bucket: str = "images", key: str = "a/b.png") -> ObjectRef:
    return ObjectRef(bucket=bucket, key=key)


@pytest.mark.parametrize("key", ["a.png", "a/b/c.png", "..png", "a/..b/c", "a/./b.png", "/lead.png", "ünï cödé+x 100%.png"])
def test_ordinary_keys_of_an_allowed_bucket_pass(key: str) -> None:
    check_source(_ref(key=key), allowed_buckets=frozenset({"images"}), archive_prefix="digits/")


def test_a_bucket_outside_the_allowlist_is_refused_and_any_passes_with_none() -> None:
    with pytest.raises(errors.BucketNotAllowed, match=r"bucket 'secrets' is not one.*images, uploads"):
        check_source(_ref(bucket="secrets"), allowed_buckets=frozenset({"images", "uploads"}))
    check_source(_ref(bucket="secrets"), allowed_buckets=None)


@pytest.mark.parametrize(("key", "reason"), [
    ("../../etc/passwd", "'..' segment"),
    ("a/../../b.png", "'..' segment"),
    ("a/..", "'..' segment"),
    ("line\nbreak.png", "control characters"),
    ("esc\x1b[31m.png", "control characters"),
    ("nul\x00.png", "control characters"),
    ("del\x7f.png", "control characters"),
    ("k" * 1023, "1024-byte limit"),
    ("é" * 512, "1024-byte limit"),  # 1,024 bytes of key: with "9/" two over
])
def test_keys_the_archive_cannot_take_are_refused(key: str, reason: str) -> None:
    with pytest.raises(errors.KeyNotAllowed, match=re.escape(reason)) as caught:
        check_source(_ref(key=key), allowed_buckets=None)
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)  # the reason quotes the key


def test_the_longest_key_that_fits_passes() -> None:
    check_source(_ref(key="k" * (1024 - len("digits/9/"))), allowed_buckets=None, archive_prefix="digits/")
    with pytest.raises(errors.KeyNotAllowed):
        check_source(_ref(key="k" * (1025 - len("digits/9/"))), allowed_buckets=None, archive_prefix="digits/")


@pytest.mark.parametrize(
    ("key", "review_prefix", "own"),
    [
        ("review/3/a.png", "review/", True),
        ("3/a.png", "review/", True),  # the archive's own folders still are
        ("review/3/a.png", None, False),  # review off: an ordinary key
        ("review/x/a.png", "review/", False),
        ("review/3/", "review/", False),
        ("check-7/a.png", "check-", True),
    ],
)
def test_review_copies_are_own_archive_writes_while_review_is_on(key, review_prefix, own) -> None:
    assert is_own_archive_write("digits", key, archive_bucket="digits", archive_prefix="",
                                review_prefix=review_prefix) is own
    raw = encode({"Records": [minio_record(key=quote_plus(key, safe=""))]})
    (item,) = parse_notification(raw, archive_bucket="mnist", archive_prefix="", review_prefix=review_prefix)
    assert isinstance(item, Skipped) is own


def test_the_longer_of_the_archive_and_review_prefixes_bounds_the_key() -> None:
    fits = "k" * (1024 - len("to-be-checked/9/"))
    check_source(_ref(key=fits), allowed_buckets=None, archive_prefix="", review_prefix="to-be-checked/")
    with pytest.raises(errors.KeyNotAllowed, match="1024-byte limit"):
        check_source(_ref(key=fits + "k"), allowed_buckets=None, archive_prefix="", review_prefix="to-be-checked/")
    check_source(_ref(key=fits + "k"), allowed_buckets=None, archive_prefix="")  # review off: the archive's alone
    # a longer archive prefix still counts
    with pytest.raises(errors.KeyNotAllowed):
        check_source(_ref(key=fits + "k"), allowed_buckets=None, archive_prefix="to-be-checked/", review_prefix="r/")
