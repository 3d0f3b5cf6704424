"""Images held for review (``STREAMAPP_REVIEW_BELOW``) end to end, on a stack of
their own: the real broker, S3 server, model server and worker, the worker
started with the threshold set.

Which images fall below it is not assumed: the model server is asked first
(the pipeline's own transform and client), and the test requires at least one
image on each side. Clean samples come out at 0.88-0.97 with the bundled
model, two digits drawn over each other with OpenCV at 0.25-0.45; the
threshold, 0.5, sits between them with room on both sides.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import cv2
import numpy as np
import pytest

from streamapp.embedded.notifications import minio_notification
from streamapp.embedded.stack import Stack
from streamapp.imaging.tensor import to_tensor
from streamapp.pipeline.records import LabeledRecord
from streamapp.serving.client import PredictorClient
from streamapp.serving.protocol import Prediction
from tests.support import (
    SETTLE,
    digit_counts,
    http_json,
    list_keys,
    produce,
    read_topic,
    running_stack,
    s3_call,
    sample_label,
    upload_files,
    wait_for,
)

pytestmark = pytest.mark.integration

THRESHOLD = 0.5
#: pairs of digits drawn over each other: the model cannot be sure of either
OVERLAPS = (("1", "7"), ("0", "6"), ("1", "4"))
#: becomes a script in the dashboard if a key is ever inserted as HTML
HOSTILE = "<img src=x onerror=__xss=1>"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose worker holds images under 0.5 for review."""
    with running_stack(tmp_path_factory.mktemp("review-stack"), STREAMAPP_REVIEW_BELOW=str(THRESHOLD)) as stack:
        yield stack


def overlapped(first: str, second: str) -> bytes:
    """Two digits drawn over each other, black on white, as a PNG."""
    canvas = np.full((120, 120), 255, np.uint8)
    cv2.putText(canvas, first, (25, 95), cv2.FONT_HERSHEY_SIMPLEX, 3, 0, 8)
    cv2.putText(canvas, second, (40, 95), cv2.FONT_HERSHEY_SIMPLEX, 3, 0, 8)
    ok, data = cv2.imencode(".png", canvas)
    assert ok
    return data.tobytes()


def ask_the_model_server(stack: Stack, files: list[Path]) -> list[Prediction]:
    """The stack's model server's answer for ``files``, through the pipeline's transform and client."""
    tensors = np.stack([to_tensor(path.read_bytes()) for path in files])

    async def ask() -> list[Prediction]:
        async with aiohttp.ClientSession() as session:
            client = PredictorClient(session, base_url=stack.predictor_url, model_name=stack.settings.model_name)
            return await client.predict(tensors)

    return asyncio.run(ask())


def stats(stack: Stack) -> dict:
    return http_json(stack.web_url() + "/stats/")


def review_counts(stack: Stack) -> Counter[int]:
    return Counter({int(d): n for d, n in stats(stack)["review"].items()})


def metric(stack: Stack, name: str) -> Counter[int]:
    """``name{digit}`` as this worker's /metrics says, per digit."""
    with urllib.request.urlopen(stack.web_url() + "/metrics", timeout=5) as response:  # noqa: S310 (loopback)
        text = response.read().decode()
    found: Counter[int] = Counter()
    for line in text.splitlines():
        if line.startswith(name + '{digit="'):
            found[int(line.split('"')[1])] = int(float(line.split()[-1]))
    return found


def both_tallies(stack: Stack) -> tuple[Counter[int], Counter[int]]:
    return digit_counts(stack), review_counts(stack)


def wait_tallies(stack: Stack, digits: Counter[int], review: Counter[int]) -> None:
    def reached():
        try:
            return both_tallies(stack) == (digits, review)
        except OSError:  # 503 while recovering, refused while restarting
            return False

    wait_for(reached, timeout=SETTLE, what=f"counts {dict(digits)} and review {dict(review)}")


def test_unsure_images_are_archived_for_review_and_counted_apart_exactly_once(stack, samples, tmp_path):
    run = f"review-{time.time_ns():x}/"
    # one clean sample of each digit, and digits drawn over each other
    clean = [next(p for p in samples if sample_label(p) == digit) for digit in range(10)]
    folder = tmp_path / "upload"
    (folder / "sure").mkdir(parents=True)
    (folder / "unsure").mkdir()
    for path in clean:
        (folder / "sure" / path.name).write_bytes(path.read_bytes())
    for first, second in OVERLAPS:
        (folder / "unsure" / f"{first}{second}.png").write_bytes(overlapped(first, second))
    (folder / "unsure" / f"{HOSTILE}.png").write_bytes(overlapped(*OVERLAPS[0]))
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    keys = {path: run + path.relative_to(folder).as_posix() for path in files}

    # the model server's own answers: which images are below the threshold is measured, not assumed
    answers = dict(zip(files, ask_the_model_server(stack, files), strict=True))
    confidence = {path: max(answer.probabilities) for path, answer in answers.items()}
    guess = {path: answer.digit for path, answer in answers.items()}
    sure = {path for path in files if confidence[path] >= THRESHOLD}
    unsure = set(files) - sure
    assert sure and unsure, {p.name: round(c, 3) for p, c in confidence.items()}
    assert sure == {folder / "sure" / p.name for p in clean}, {p.name: round(c, 3) for p, c in confidence.items()}
    assert all(guess[folder / "sure" / p.name] == sample_label(p) for p in clean)

    digits_before, review_before = both_tallies(stack)
    counted_before, held_before = metric(stack, "streamapp_images_counted_total"), metric(stack, "streamapp_images_review_total")
    uploaded = upload_files(stack, [folder], prefix=run)
    assert len(uploaded) == len(files)
    digits = digits_before + Counter(guess[p] for p in sure)
    review = review_before + Counter(guess[p] for p in unsure)
    wait_tallies(stack, digits, review)

    # labeled: every record carries its top probability, the model server's
    labeled = {r["image"]["key"]: r for r in read_topic(stack, stack.settings.labeled_topic)
               if r["image"]["key"].startswith(run)}
    for path in files:
        record = labeled[keys[path]]
        assert record["confidence"] == pytest.approx(max(record["probabilities"]))
        assert record["confidence"] == pytest.approx(confidence[path], abs=1e-4)

    # archived: the sure under <n>/, the unsure under review/<n>/ with the model's guess; never both
    archive = list_keys(stack, stack.settings.archive_bucket)
    for path in files:
        digit_key, review_key = f"{guess[path]}/{keys[path]}", f"review/{guess[path]}/{keys[path]}"
        held = path in unsure
        assert (review_key in archive, digit_key in archive) == (held, not held), path.name
    unsure_path = next(iter(unsure))
    copy = s3_call(stack, "get_object", Bucket=stack.settings.archive_bucket,
                   Key=f"review/{guess[unsure_path]}/{keys[unsure_path]}")["Body"]
    assert copy == unsure_path.read_bytes()

    # counted apart everywhere: /stats/, the metrics, and /digits/ keeps its ten keys
    answer = stats(stack)
    assert answer["review_below"] == THRESHOLD and answer["review_images"] == review.total()
    assert answer["images"] == digits.total()
    assert set(http_json(stack.web_url() + "/digits/")) == {str(d) for d in range(10)}
    assert metric(stack, "streamapp_images_counted_total") == counted_before + Counter(guess[p] for p in sure)
    assert metric(stack, "streamapp_images_review_total") == held_before + Counter(guess[p] for p in unsure)
    # the dashboard's latest images say which are held
    shown = {i["object"]: i for i in http_json(stack.web_url() + "/api/dashboard/")["images"]}
    for path in files:
        if (url := f"s3://{stack.config.input_bucket}/{keys[path]}") in shown:
            assert shown[url]["review"] is (path in unsure), url

    # the store delivers every notification twice more: nothing counted twice, nothing moved
    counted = answer["worker"]["counters"]["counted"]
    messages = [minio_notification(u.ref) for u in uploaded] * 2
    produce(stack, stack.settings.events_topic, messages)
    wait_for(lambda: stats(stack)["worker"]["counters"].get("counted", 0) >= counted + len(messages),
             timeout=SETTLE, what="the duplicates to reach the archive agent")
    assert both_tallies(stack) == (digits, review)
    assert metric(stack, "streamapp_images_review_total") == held_before + Counter(guess[p] for p in unsure)
    assert {k for k in list_keys(stack, stack.settings.archive_bucket) if run in k} == \
        {k for k in archive if run in k}

    # a restarted worker reads both tallies back from its state
    stack.stop_worker(0)
    stack.start_worker(0)
    stack.wait_worker_ready(0)
    wait_tallies(stack, digits, review)


def test_records_without_a_confidence_still_load_and_no_probabilities_means_review(stack, samples, tmp_path):
    """Labeled records as the workers wrote them before the confidence existed
    (still in the topic at an upgrade), and one from a predictor that sent no
    probabilities, produced on the labeled topic as another worker would."""
    run = f"old-records-{time.time_ns():x}/"
    folder = tmp_path / "objects"
    folder.mkdir()
    sure_sample = next(p for p in samples if sample_label(p) == 4)
    (folder / "old-sure.png").write_bytes(sure_sample.read_bytes())
    (folder / "old-unsure.png").write_bytes(overlapped("3", "8"))
    (folder / "no-probabilities.png").write_bytes(sure_sample.read_bytes())
    refs = {Path(u.path).name: u.ref for u in upload_files(stack, [folder], prefix=run, notify=False)}

    def old_record(name: str, digit: int, probabilities: list[float] | None) -> tuple[bytes, bytes]:
        record = LabeledRecord(image=refs[name], digit=digit, model="mnist", timings={}, received_at=time.time(),
                               probabilities=probabilities)
        value = json.loads(record.dumps())
        del value["confidence"]  # the shape of a record written before it existed
        return refs[name].path.encode(), json.dumps(value).encode()

    sure = [0.01] * 10
    sure[4] = 0.91
    unsure = [0.05] * 10
    unsure[3], unsure[8] = 0.4, 0.2
    digits_before, review_before = both_tallies(stack)
    produce(stack, stack.settings.labeled_topic, [old_record("old-sure.png", 4, sure),
                                                  old_record("old-unsure.png", 3, unsure),
                                                  old_record("no-probabilities.png", 4, None)])
    wait_tallies(stack, digits_before + Counter({4: 1}), review_before + Counter({3: 1, 4: 1}))
    archive = list_keys(stack, stack.settings.archive_bucket)
    assert f"4/{run}old-sure.png" in archive
    assert f"review/3/{run}old-unsure.png" in archive
    assert f"review/4/{run}no-probabilities.png" in archive
    assert not {f"3/{run}old-unsure.png", f"4/{run}no-probabilities.png"} & archive


REVIEW_ROW = "[...Array(10).keys()].map(d => Number(document.getElementById('r' + d).textContent))"
FIGURES = """[...document.querySelectorAll('#images figure')].map(f => ({
    object: f.dataset.object, review: f.dataset.review, low: f.classList.contains('low'),
    elements: f.querySelectorAll('script, [onerror]').length}))"""


def test_the_dashboard_shows_the_review_tally_and_marks_held_images(stack, tmp_path):
    from tests.pipeline.test_dashboard import Browser, find_or_install_chromium

    profile = tmp_path / "profile"
    profile.mkdir()
    browser = Browser(find_or_install_chromium(), profile, tmp_path / "chromium.log")
    try:
        browser.open(stack.web_url() + "/")
        # an unsure image whose key is HTML, uploaded while the page polls
        run = f"dash-review-{time.time_ns():x}/"
        (tmp_path / "up").mkdir()
        (tmp_path / "up" / f"{HOSTILE}.png").write_bytes(overlapped("1", "7"))
        (uploaded,) = upload_files(stack, [tmp_path / "up"], prefix=run)
        wait_for(lambda: review_counts(stack).total() > 0 and any(
            i["object"] == uploaded.ref.url for i in http_json(stack.web_url() + "/api/dashboard/")["images"]),
            timeout=SETTLE, what="the unsure image to be counted")
        review = review_counts(stack)
        browser.wait(REVIEW_ROW, lambda shown: shown == [review[d] for d in range(10)],
                     what=f"the review row to show {dict(review)}")
        assert browser.evaluate("document.getElementById('review').hidden") is False
        assert browser.evaluate("document.getElementById('review-note').dataset.value") == str(review.total())
        assert "held for review" in browser.evaluate("document.getElementById('review-note').textContent")
        # the bars are the digits alone
        digits = digit_counts(stack)
        browser.wait("[...Array(10).keys()].map(d => Number(document.getElementById('n' + d).textContent))",
                     lambda shown: shown == [digits[d] for d in range(10)], what="the bars")
        figures = browser.wait(FIGURES, lambda figs: any(f["object"] == uploaded.ref.url for f in figs),
                               what="the unsure image among the latest")
        (held,) = [f for f in figures if f["object"] == uploaded.ref.url]
        assert held == {"object": uploaded.ref.url, "review": "true", "low": True, "elements": 0}
        assert browser.evaluate("typeof window.__xss") == "undefined"
        errors = [e["params"] for e in browser.events if e["method"] == "Runtime.exceptionThrown"]
        assert not errors, errors
        browser.screenshot(tmp_path / "dashboard-review.png")
    finally:
        browser.close()
