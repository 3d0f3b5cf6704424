"""The topics' typed records: identity, round trips, malformed payloads."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from streamapp import errors
from streamapp.pipeline.records import DeadLetter, LabeledRecord, ObjectRef, TensorRecord, top_confidence

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


def test_labeled_and_dead_letter_round_trip():
    labeled = LabeledRecord(image=REF, digit=7, model="mnist", timings={"predict": 0.1}, received_at=2.0,
                            probabilities=[0.1] * 10)
    assert LabeledRecord.loads(labeled.dumps()) == labeled
    dead = DeadLetter.now(stage="preprocess", kind="empty_image", reason="zero bytes", image=REF,
                          topic="s3-events", partition=3, offset=42, index=1)
    back = DeadLetter.loads(dead.dumps())
    assert back == dead and back.failed_at > 0
    assert back.source == "s3-events:3:42:1:preprocess"


def test_labeled_records_carry_the_top_confidence():
    labeled = LabeledRecord(image=REF, digit=7, model="mnist", timings={}, received_at=2.0,
                            probabilities=[0.05, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.8, 0.05, 0.0])
    assert labeled.confidence == 0.8
    back = LabeledRecord.loads(labeled.dumps())
    assert back.confidence == 0.8 and back == labeled
    # no probabilities from the predictor: no confidence
    assert LabeledRecord(image=REF, digit=7, model="m", timings={}, received_at=0.0).confidence is None
    # as given, when given
    assert LabeledRecord(image=REF, digit=7, model="m", timings={}, received_at=0.0, probabilities=[0.5, 0.5],
                         confidence=0.5).confidence == 0.5
    assert top_confidence([0.25, 0.75]) == 0.75 and top_confidence(None) is None and top_confidence([]) is None


def test_labeled_records_written_before_the_confidence_still_load():
    # a record already in the topic when the workers are upgraded, as the old code wrote it
    old = json.loads(LabeledRecord(image=REF, digit=2, model="mnist", timings={"predict": 0.1}, received_at=1.0,
                                   probabilities=[0.1, 0.2, 0.7]).dumps())
    del old["confidence"]
    back = LabeledRecord.loads(json.dumps(old).encode())
    assert (back.digit, back.confidence) == (2, 0.7)  # from its probabilities: archived as a new one would be
    old["probabilities"] = None
    assert LabeledRecord.loads(json.dumps(old).encode()).confidence is None


def test_records_go_through_orjson_and_read_what_the_standard_json_wrote():
    # Faust picks its JSON codec at import: orjson, a dependency, when installed
    from faust.utils import json as faust_json

    assert faust_json.orjson is not None
    labeled = LabeledRecord(image=REF, digit=7, model="m", timings={"predict": 0.004}, received_at=1.5,
                            probabilities=[0.05, 0.95])
    # a record as a worker on the standard library's json wrote it (non-ASCII
    # keys escaped): read the same, so workers of either kind share the topics
    old_wire = json.dumps(json.loads(labeled.dumps())).encode()
    assert b"\\u00e9" in old_wire
    assert LabeledRecord.loads(old_wire) == labeled
    assert b"\\u00e9" not in labeled.dumps()  # orjson writes UTF-8
