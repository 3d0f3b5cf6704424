"""streamapp.pipeline.recent: what the dashboard is fed (pure, no server)."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

from streamapp.pipeline.recent import EDGES, Recent, histogram, merge, quantile, thumbnail
from tests.support import Clock


def test_thumbnail_is_the_tensor_as_a_png_data_url() -> None:
    tensor = np.zeros((28, 28), np.float32)
    tensor[10:18, 12:16] = 1.0
    url = thumbnail(tensor)
    assert url.startswith("data:image/png;base64,")
    pixels = cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert pixels.shape == (28, 28) and pixels[12, 13] == 255 and pixels[0, 0] == 0


@pytest.mark.parametrize("q", [0.5, 0.99])
def test_quantiles_of_the_histogram_are_within_a_bucket_of_the_true_ones(q: float) -> None:
    values = np.random.default_rng(1).lognormal(mean=np.log(0.05), sigma=1.0, size=5000)
    got = quantile(histogram(values), q)
    true = float(np.quantile(values, q))
    assert true / 1.25 <= got <= true * 1.25
    assert quantile(histogram([]), q) is None


def test_values_past_the_last_edge_are_kept_in_the_overflow_bucket() -> None:
    counts = histogram([1000.0, 0.00001])
    assert len(counts) == len(EDGES) + 1 and counts[-1] == 1 and counts[0] == 1


def test_recent_keeps_the_newest_and_only_the_window_of_timings() -> None:
    clock = Clock()
    recent = Recent(keep=3, window=60, clock=clock)
    for i in range(5):
        clock.now += 1
        recent.image(f"s3://in/{i}.png", i, 0.9, np.zeros((28, 28), np.float32))
    recent.dead_letter(stage="preprocess", kind="empty_image", reason="x" * 900, path="s3://in/<b>.png")
    recent.counted({"end_to_end": 0.1})
    clock.now += 120  # that timing is now out of the window
    recent.counted({"end_to_end": 0.2, "archive": 0.01})
    snap = recent.snapshot()
    assert [i["object"] for i in snap["images"]] == ["s3://in/4.png", "s3://in/3.png", "s3://in/2.png"]
    assert snap["dead_letters"][0]["object"] == "s3://in/<b>.png" and len(snap["dead_letters"][0]["reason"]) == 500
    assert sum(snap["stage_seconds"]["end_to_end"]) == 1 and sum(snap["stage_seconds"]["archive"]) == 1


def test_merge_takes_the_newest_of_all_workers_and_sums_their_timings() -> None:
    a, b = Clock(1000.0), Clock(1000.0)
    first, second = Recent(clock=a), Recent(clock=b)
    first.image("s3://in/old.png", 1, 0.5, np.zeros((28, 28), np.float32))
    b.now += 5
    second.image("s3://in/new.png", 2, None, np.zeros((28, 28), np.float32))
    for _ in range(99):
        first.counted({"predict": 0.01})
    second.counted({"predict": 2.0})
    merged = merge([first.snapshot(), second.snapshot()])
    assert [i["object"] for i in merged["images"]] == ["s3://in/new.png", "s3://in/old.png"]
    assert merged["stages"]["predict"]["count"] == 100
    assert 0.008 <= merged["stages"]["predict"]["p50"] <= 0.0125
    assert merged["stages"]["predict"]["p99"] <= 0.0125  # the 100th value is past the 99th percentile


def test_images_say_whether_they_are_held_for_review() -> None:
    recent = Recent(clock=Clock())
    recent.image("s3://in/sure.png", 1, 0.97, np.zeros((28, 28), np.float32))
    recent.image("s3://in/unsure.png", 8, 0.3, np.zeros((28, 28), np.float32), review=True)
    images = {i["object"]: i for i in recent.snapshot()["images"]}
    assert (images["s3://in/sure.png"]["review"], images["s3://in/unsure.png"]["review"]) == (False, True)
    assert images["s3://in/unsure.png"]["confidence"] == 0.3
