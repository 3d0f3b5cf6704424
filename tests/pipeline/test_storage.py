"""The worker's S3 client, without a server: error mapping and archive keys."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from streamapp import errors
from streamapp.pipeline.records import ObjectRef
from streamapp.pipeline.storage import _map_client_error, archive_key

REF = ObjectRef(bucket="images", key="a b/é+.png", etag='"abc"', version_id="", size=10)


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
    if isinstance(error, errors.StorageUnavailable):
        assert error.status == status  # a 403 is told apart from an outage (Pipeline.s3_call)


def test_archive_key_keeps_the_original_key():
    assert archive_key(REF, 7) == "7/a b/é+.png"
    assert archive_key(REF, 0, "digits/") == "digits/0/a b/é+.png"
