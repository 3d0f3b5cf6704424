"""The topology end to end against the real broker, S3 server and predictor.

Every test uploads through ``streamapp upload``'s code path (PutObject plus
the MinIO notification JSON on the events topic) or publishes raw messages
like a foreign producer would, then looks at what a user sees: the labeled
topic, the archive bucket, ``GET /digits/`` and the dead-letter topic.
Counts are compared as deltas, since the tests share one stack.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import cv2
import numpy as np
import pytest

from streamapp.embedded.notifications import minio_notification
from streamapp.pipeline.records import ObjectRef, TensorRecord
from tests.support import (
    MAX_OBJECT_BYTES,
    SETTLE,
    digit_counts,
    http_json,
    list_keys,
    produce,
    read_topic,
    tricky_copies,
    upload_files,
    wait_counts,
    wait_for,
)

pytestmark = pytest.mark.integration

def dead_letters_for(stack, predicate) -> list[dict]:
    return [r for r in read_topic(stack, stack.settings.dead_letter_topic) if predicate(r)]


def test_samples_are_labeled_archived_and_counted(stack, samples, tmp_path):
    before = digit_counts(stack)
    labels = tricky_copies(samples, tmp_path)
    prefix = "e2e/"
    uploaded = upload_files(stack, [tmp_path], prefix=prefix)
    assert len(uploaded) == len(samples)

    expected = before + Counter(labels.values())
    assert wait_counts(stack, expected) == expected

    # labeled: every image got its true digit
    labeled = {
        r["image"]["key"]: r["digit"]
        for r in read_topic(stack, stack.settings.labeled_topic)
        if r["image"]["key"].startswith(prefix)
    }
    assert labeled == {prefix + key: label for key, label in labels.items()}

    # archived: the original bytes under digits/<n>/<original key>
    archive = list_keys(stack, stack.settings.archive_bucket)
    for key, label in labels.items():
        assert f"{label}/{prefix}{key}" in archive
    key, label = next(iter(labels.items()))
    copy = stack_get(stack, stack.settings.archive_bucket, f"{label}/{prefix}{key}")
    assert copy == (tmp_path / key).read_bytes()

    # nothing about these images was dead-lettered
    assert not dead_letters_for(stack, lambda r: (r.get("image") or {}).get("key", "").startswith(prefix))


def stack_get(stack, bucket: str, key: str) -> bytes:
    from tests.support import s3_call

    return s3_call(stack, "get_object", Bucket=bucket, Key=key)["Body"]


def test_replayed_notifications_count_once(stack, samples, tmp_path):
    chosen = samples[:12]
    labels = tricky_copies(chosen, tmp_path, folder="replay")
    before = digit_counts(stack)
    uploaded = upload_files(stack, [tmp_path], prefix="replay/")
    expected = before + Counter(labels.values())
    wait_counts(stack, expected)
    counted = http_json(stack.web_url() + "/stats/")["worker"]["counters"].get("counted", 0)

    # the store (or a replaying consumer) delivers every notification twice more
    messages = [minio_notification(u.ref) for u in uploaded] * 2
    produce(stack, stack.settings.events_topic, messages)
    wait_for(
        lambda: http_json(stack.web_url() + "/stats/")["worker"]["counters"].get("counted", 0) >= counted + len(messages),
        timeout=SETTLE,
        what="the duplicates to reach the tally",
    )
    assert digit_counts(stack) == expected


def png_bytes(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def test_bad_inputs_go_to_dead_letters_while_good_images_flow(stack, samples, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    sample_png = next(p for p in samples if p.suffix == ".png").read_bytes()
    files = {
        "empty.png": b"",
        "text.png": b"hello, I am not an image\n" * 10,
        "truncated.png": sample_png[: len(sample_png) // 2],
        "too-large.png": np.random.default_rng(0).bytes(MAX_OBJECT_BYTES + 1),
        "too-many-pixels.png": png_bytes(np.zeros((2100, 2100), np.uint8)),
        "blank.png": png_bytes(np.full((64, 64), 255, np.uint8)),
    }
    for name, data in files.items():
        (bad / name).write_bytes(data)
    good = tricky_copies(samples[:10], tmp_path / "good", folder="g")
    before = digit_counts(stack)
    run = f"dl-{time.time_ns()}/"
    upload_files(stack, [bad], prefix=run)

    # notifications that are not usable at all
    gone = ObjectRef(bucket=stack.config.input_bucket, key=run + "never-uploaded.png", etag="0" * 32, size=10)
    gone_key, gone_value = minio_notification(gone)
    good_record = json.loads(gone_value)
    missing_key = json.loads(gone_value)
    del missing_key["Records"][0]["s3"]["object"]["key"]
    # objects the workers must not read, or cannot archive: refused before any S3 call
    # (a GET of a bucket that does not exist would have been object_not_found)
    refused = [
        ObjectRef(bucket="elsewhere", key=run + "outside.png", etag="2" * 32, size=10),
        ObjectRef(bucket=stack.config.input_bucket, key=run + "escape/../../../x.png", etag="3" * 32, size=10),
        ObjectRef(bucket=stack.config.input_bucket, key=run + "forged\nlog line.png", etag="4" * 32, size=10),
    ]
    # a key S3 refuses (403) while it answers for the bucket: nanio cannot sign a %XX
    # escape (tests/embedded/test_s3.py), as AWS refuses an object under a KMS key the
    # worker may not use; it used to stall its partition, retried as "S3 down"
    refused.append(ObjectRef(bucket=stack.config.input_bucket, key=run + "100%25 sure.png", etag="5" * 32, size=10))
    produce(
        stack,
        stack.settings.events_topic,
        [
            (b"junk", b"this is {not json"),
            (b"junk", json.dumps({"hello": "world"}).encode()),
            (b"junk", json.dumps(missing_key).encode()),
            (gone_key, json.dumps(good_record).encode()),
            *(minio_notification(ref) for ref in refused),
        ],
    )
    # a tensor from a foreign producer that the predictor refuses (values far out of range)
    rogue = ObjectRef(bucket=stack.config.input_bucket, key=run + "rogue-tensor", etag="1" * 32)
    rogue_record = TensorRecord.from_array(rogue, np.full((28, 28), 1e6, np.float32), timings={}, received_at=time.time())
    produce(stack, stack.settings.tensors_topic, [(rogue.path.encode(), rogue_record.dumps())])
    upload_files(stack, [tmp_path / "good"], prefix=run)

    # good images keep flowing
    wait_counts(stack, before + Counter(good.values()))

    expected_kinds = {
        run + "empty.png": "empty_image",
        run + "text.png": "undecodable_image",
        run + "truncated.png": "undecodable_image",
        run + "too-large.png": "object_too_large",
        run + "too-many-pixels.png": "image_too_large",
        run + "blank.png": "empty_image",
        run + "never-uploaded.png": "object_not_found",
        run + "rogue-tensor": "predictor_rejected",
        run + "outside.png": "bucket_not_allowed",
        run + "escape/../../../x.png": "key_not_allowed",
        run + "forged\nlog line.png": "key_not_allowed",
        run + "100%25 sure.png": "object_access_denied",
    }

    def by_key() -> dict[str, dict]:
        return {
            r["image"]["key"]: r
            for r in read_topic(stack, stack.settings.dead_letter_topic)
            if r.get("image") and r["image"]["key"].startswith(run)
        }

    found = wait_for(lambda: (d := by_key()).keys() >= expected_kinds.keys() and d, timeout=SETTLE, what="dead letters")
    for key, kind in expected_kinds.items():
        record = found[key]
        assert record["kind"] == kind, record
        assert record["reason"], record
        assert record["topic"] and record["offset"] >= 0
    assert found[run + "rogue-tensor"]["stage"] == "inference"
    assert found[run + "never-uploaded.png"]["stage"] == "preprocess"
    assert "STREAMAPP_SOURCE_BUCKETS" in found[run + "outside.png"]["reason"]
    assert found[run + "outside.png"]["image"]["bucket"] == "elsewhere"

    # notifications that are not usable: the original text is kept with the reason
    events = [r for r in read_topic(stack, stack.settings.dead_letter_topic) if r["stage"] == "events"]
    texts = {r["event"]: r for r in events}
    assert "this is {not json" in texts
    assert texts["this is {not json"]["kind"] == "invalid_event"
    assert json.dumps({"hello": "world"}) in texts
    assert any("key" in r["reason"] for r in events if r["event"] == json.dumps(missing_key))

    # and none of the bad inputs was counted
    assert digit_counts(stack) == before + Counter(good.values())


def test_dashboard_and_stats(stack):
    page = urllib_get(stack.web_url() + "/")
    assert "<title>streamapp" in page and "digits/" in page
    stats = http_json(stack.web_url() + "/stats/")
    assert stats["images"] == sum(digit_counts(stack).values())
    assert set(digit_counts(stack)) == set(range(10))


def urllib_get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
        return response.read().decode()
