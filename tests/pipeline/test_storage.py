"""The worker's S3 client, without a server: error mapping, archive keys and the review decision."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from streamapp import errors
from streamapp.pipeline.records import ObjectRef
from streamapp.pipeline.storage import _map_client_error, archive_destination, archive_key, held_for_review
from streamapp.settings import Settings

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


# -- where an image is archived: its digit's folder, or review's ----------------------------


@pytest.mark.parametrize(("confidence", "below", "held"), [
    (0.99, None, False),  # review off: nothing is held, whatever the confidence
    (None, None, False),
    (0.1, None, False),
    (0.49, 0.5, True),
    (0.5, 0.5, False),  # "below": the threshold itself is sure enough
    (0.51, 0.5, False),
    (None, 0.5, True),  # no probabilities: nothing says the model is sure
    (float("nan"), 0.5, True),
    (0.999999, 1.0, True),  # 1: anything short of certain is checked
    (1.0, 1.0, False),
])
def test_held_for_review(confidence, below, held):
    assert held_for_review(confidence, below) is held


def test_archive_destination_is_the_digit_folder_or_the_review_folder_with_the_guess():
    off = Settings(archive_prefix="labels/")
    on = Settings(archive_prefix="labels/", review_below=0.8)
    assert archive_destination(REF, 3, 0.2, off) == ("labels/3/a b/é+.png", False)
    assert archive_destination(REF, 3, 0.95, on) == ("labels/3/a b/é+.png", False)
    assert archive_destination(REF, 3, 0.2, on) == ("review/3/a b/é+.png", True)
    assert archive_destination(REF, 8, None, on) == ("review/8/a b/é+.png", True)
    custom = Settings(review_below=0.8, review_prefix="to-check/")
    assert archive_destination(REF, 0, 0.79, custom) == ("to-check/0/a b/é+.png", True)
    # the same record and settings: the same key, so a replay rewrites the same copy
    assert archive_destination(REF, 3, 0.2, on) == archive_destination(REF, 3, 0.2, on)
