"""Pure parts of the pipeline, tested without any server: settings, records,
retry policy, S3 error mapping, upload helpers."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import re

import numpy as np
import pytest
from botocore.exceptions import ClientError

from streamapp import errors
from streamapp.records import ArchivedRecord, DeadLetter, LabeledRecord, ObjectRef, TensorRecord
from streamapp.retry import backoff_delays, retry_until_done
from streamapp.settings import Settings, parse_value
from streamapp.storage import _map_client_error, archive_key
from streamapp.upload import bootstrap_servers, image_files

# -- settings -------------------------------------------------------------------


def test_settings_defaults_and_env_types():
    s = Settings.from_env({})
    assert s.events_topic == "s3-events" and s.archive_bucket == "digits" and s.archive_prefix == ""
    s = Settings.from_env(
        {"STREAMAPP_BATCH_MAX_SIZE": "7", "STREAMAPP_BATCH_MAX_DELAY": "0.25", "STREAMAPP_PREDICTOR_PROTOCOL": "v1"}
    )
    assert (s.batch_max_size, s.batch_max_delay, s.predictor_protocol) == (7, 0.25, "v1")


def test_settings_read_the_standard_aws_variables():
    s = Settings.from_env({"AWS_ENDPOINT_URL": "http://minio:9000", "AWS_DEFAULT_REGION": "eu-west-1"})
    assert (s.s3_endpoint_url, s.s3_region) == ("http://minio:9000", "eu-west-1")
    # the S3-specific endpoint wins over the general one, as in botocore
    s = Settings.from_env({"AWS_ENDPOINT_URL": "http://a", "AWS_ENDPOINT_URL_S3": "http://b"})
    assert s.s3_endpoint_url == "http://b"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STREAMAPP_BATCH_MAX_SIZE", "many"),
        ("STREAMAPP_BATCH_MAX_SIZE", "0"),
        ("STREAMAPP_TRANSFORM", "sepia"),
        ("STREAMAPP_PREDICTOR_PROTOCOL", "v3"),
        ("STREAMAPP_MAX_OBJECT_BYTES", "-1"),
    ],
)
def test_settings_refuse_bad_values(name, value):
    with pytest.raises(ValueError, match=name.removeprefix("STREAMAPP_").lower() + "|" + name):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("true", True), ("YES", True), ("on", True), ("0", False), ("False", False), ("no", False),
     ("off", False)],
)
def test_bool_settings_read_the_usual_forms(raw, expected):
    assert parse_value("STREAMAPP_X", "bool", raw) is expected


@pytest.mark.parametrize(
    ("annotation", "raw", "says"),
    [
        ("bool", "maybe", "STREAMAPP_X='maybe': expected one of 1, true, yes, on, 0, false, no, off"),
        ("int", "1.5", "STREAMAPP_X='1.5': expected a whole number"),
        ("float", "fast", "STREAMAPP_X='fast': expected a number"),
        ("float", "nan", "STREAMAPP_X='nan': expected a finite number"),
    ],
)
def test_bad_setting_values_name_the_variable_and_the_accepted_forms(annotation, raw, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_value("STREAMAPP_X", annotation, raw)


@pytest.mark.parametrize(
    ("name", "value"),
    [("STREAMAPP_BATCH_MAX_DELAY", "-1"), ("STREAMAPP_PREDICTOR_TIMEOUT", "0"), ("STREAMAPP_RETRY_MAX", "-2"),
     ("STREAMAPP_S3_MAX_CONNECTIONS", "0")],
)
def test_settings_out_of_range_name_the_variable(name, value):
    with pytest.raises(ValueError, match=f"^{name}="):
        Settings.from_env({name: value})


def test_every_setting_reads_its_own_default_back():
    for field in dataclasses.fields(Settings):
        if field.default is not None:
            assert parse_value(field.metadata["env"], str(field.type), str(field.default)) == field.default


def test_settings_are_frozen_and_documented():
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.batch_max_size = 3  # type: ignore[misc]
    docs = Settings.documentation()
    assert len(docs) == len(vars(s)) and all(doc for _, _, doc in docs)
    assert not any("SECRET" in name or "ACCESS_KEY" in name for name, _, _ in docs)


# -- records --------------------------------------------------------------------

REF = ObjectRef(bucket="images", key="a b/é+.png", etag='"abc"', version_id="", size=10)


def test_object_identity_is_the_version():
    assert REF.path == "images/a b/é+.png"
    assert REF.identity == "images/a b/é+.png@abc"
    assert ObjectRef(bucket="b", key="k", etag="e", version_id="v1").identity == "b/k@v1"
    assert ObjectRef(bucket="b", key="k").identity == "b/k"


def test_tensor_record_round_trip_is_exact_and_compact():
    tensor = np.random.default_rng(1).random((28, 28), dtype=np.float32)
    record = TensorRecord.from_array(REF, tensor, timings={"s3_get": 0.01}, received_at=1.5)
    wire = record.dumps()
    back = TensorRecord.loads(wire)
    assert isinstance(back.image, ObjectRef) and back.image == REF
    np.testing.assert_array_equal(back.array(), tensor)
    assert back.array().dtype == np.float32
    assert len(wire) < 5000  # a JSON list of 784 floats would be ~12 KB


def test_records_do_not_share_mutable_state():
    a = LabeledRecord(image=REF, digit=1, model="m", timings={}, received_at=0.0)
    b = LabeledRecord(image=REF, digit=1, model="m", timings={}, received_at=0.0)
    a.timings["x"] = 1.0
    assert b.timings == {}


@pytest.mark.parametrize(
    "payload",
    [
        "not base64 !!",
        base64.b64encode(b"\0" * 100).decode(),
        base64.b64encode(np.full((28, 28), np.nan, "<f4").tobytes()).decode(),
    ],
)
def test_malformed_tensors_are_bad_input(payload):
    record = TensorRecord(image=REF, tensor=payload, timings={}, received_at=0.0)
    with pytest.raises(errors.InvalidTensor):
        record.array()


def test_tensor_of_wrong_shape_is_refused():
    with pytest.raises(errors.InvalidTensor):
        TensorRecord.from_array(REF, np.zeros((28, 27), np.float32), timings={}, received_at=0.0)


def test_labeled_archived_and_dead_letter_round_trip():
    labeled = LabeledRecord(image=REF, digit=7, model="mnist", timings={"predict": 0.1}, received_at=2.0,
                            probabilities=[0.1] * 10)
    assert LabeledRecord.loads(labeled.dumps()) == labeled
    archived = ArchivedRecord(image=REF, digit=7, archive_key="7/a b/é+.png", timings={}, received_at=2.0)
    assert ArchivedRecord.loads(archived.dumps()) == archived
    dead = DeadLetter.now(stage="preprocess", kind="empty_image", reason="zero bytes", image=REF,
                          topic="s3-events", partition=3, offset=42, index=1)
    back = DeadLetter.loads(dead.dumps())
    assert back == dead and back.failed_at > 0
    assert back.source == "s3-events:3:42:1:preprocess"


# -- retry ------------------------------------------------------------------------


def test_backoff_doubles_with_jitter_up_to_the_maximum():
    top = [round(d, 3) for _, d in zip(range(7), backoff_delays(0.1, 1.0, jitter=lambda: 1.0), strict=False)]
    assert top == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    low = [round(d, 3) for _, d in zip(range(3), backoff_delays(0.1, 1.0, jitter=lambda: 0.0), strict=False)]
    assert low == [0.05, 0.1, 0.2]


def test_retry_until_done_retries_dependency_faults_only():
    calls = []

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise errors.StorageUnavailable("connection refused")
        return "ok"

    assert asyncio.run(retry_until_done(flaky, what="get", initial=0.001, maximum=0.002)) == "ok"
    assert len(calls) == 3

    async def bad():
        raise errors.EmptyImage("zero bytes")

    with pytest.raises(errors.EmptyImage):
        asyncio.run(retry_until_done(bad, what="get", initial=0.001, maximum=0.002))


# -- S3 error mapping ---------------------------------------------------------------


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("NoSuchKey", 404, errors.ObjectNotFound),
        ("NoSuchBucket", 404, errors.ObjectNotFound),
        ("404", 404, errors.ObjectNotFound),  # HeadObject has no body, only the status
        ("AccessDenied", 403, errors.StorageUnavailable),
        ("InvalidAccessKeyId", 403, errors.StorageUnavailable),
        ("SlowDown", 503, errors.StorageUnavailable),
        ("InternalError", 500, errors.StorageUnavailable),
    ],
)
def test_s3_errors_map_to_bad_input_or_dependency_down(code, status, kind):
    error = _map_client_error(client_error(code, status), "GetObject s3://b/k")
    assert isinstance(error, kind)
    assert "s3://b/k" in str(error)


def test_archive_key_keeps_the_original_key():
    assert archive_key(REF, 7) == "7/a b/é+.png"
    assert archive_key(REF, 0, "digits/") == "digits/0/a b/é+.png"


# -- upload helpers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "servers"),
    [
        ("kafka://localhost:9092", "localhost:9092"),
        ("tansu://127.0.0.1:1234", "127.0.0.1:1234"),
        ("kafka://a:1;kafka://b:2", "a:1,b:2"),
        ("a:1,b:2", "a:1,b:2"),
    ],
)
def test_bootstrap_servers(url, servers):
    assert bootstrap_servers(url) == servers


def test_image_files_keep_folder_layout(tmp_path):
    (tmp_path / "d" / "sub dir").mkdir(parents=True)
    (tmp_path / "d" / "sub dir" / "7.png").write_bytes(b"x")
    (tmp_path / "d" / "notes.txt").write_text("skip me")
    (tmp_path / "one.JPG").write_bytes(b"x")
    found = list(image_files([tmp_path / "d", tmp_path / "one.JPG"]))
    assert [(p.name, key) for p, key in found] == [("7.png", "sub dir/7.png"), ("one.JPG", "one.JPG")]
    with pytest.raises(FileNotFoundError):
        list(image_files([tmp_path / "missing"]))


def test_further_workers_get_a_free_web_port_and_keep_it(tmp_path):
    """Worker i listens on web_port + i unless that port is taken (a test's
    stack once lost worker 1 to an outgoing connection holding it)."""
    import socket

    from streamapp.embedded.process import free_port, port_free
    from streamapp.embedded.stack import HOST, Stack, StackConfig

    base = free_port(HOST)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        try:
            taken.bind((HOST, base + 1))
        except OSError:
            pytest.skip(f"port {base + 1} is in use already")
        stack = Stack(StackConfig(data_dir=tmp_path, web_port=base))
        assert not port_free(HOST, base + 1)
        assert stack.web_port(0) == base  # the configured port is the user's to choose
        second = stack.web_port(1)
        assert second != base + 1 and port_free(HOST, second)
    assert stack.web_port(1) == second  # a restarted worker keeps its address
