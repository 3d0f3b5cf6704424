"""``streamapp dead-letters list|redrive``: the pure parts without servers, then the
whole story on the real embedded stack.

The stack test: a predictor deployed with a limit no request can meet (``--max-batch
0``) rejects every image, so each ends as a ``predictor_rejected`` dead letter
(twice, since every notification is published twice). ``list`` shows them; once
the predictor is fixed, ``redrive`` re-publishes each image once, the counts rise
by exactly those images, and a second redrive, re-processed in full, changes no
count.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import Counter
from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from streamapp import cli
from streamapp.embedded.notifications import minio_notification
from streamapp.pipeline.events import parse_notification
from streamapp.pipeline.records import DeadLetter, ObjectRef
from streamapp.tools import dead_letters as dl
from tests.support import (
    SETTLE,
    digit_counts,
    http_json,
    produce,
    s3_call,
    start_stack,
    tricky_copies,
    upload_files,
    wait_counts,
    wait_for,
)

T0 = datetime(2026, 12, 1, 8, 30, tzinfo=UTC).timestamp()


def letter(kind="predictor_failed", stage="inference", *, key="a/1.png", etag="e1", version_id="", event=None,
           image=True, reason="predictor answered 500", at=T0) -> DeadLetter:
    ref = ObjectRef(bucket="images", key=key, etag=etag, version_id=version_id, size=321,
                    event_name="s3:ObjectCreated:Put", event_time="2026-12-01T08:29:59.000Z") if image else None
    return DeadLetter(stage=stage, kind=kind, reason=reason, image=ref, event=event, topic="s3-events",
                      partition=1, offset=7, failed_at=at)


def found(record: DeadLetter, offset: int = 0, partition: int = 0) -> dl.Found:
    return dl.Found(record, partition, offset, record.failed_at)


# -- reading the topic's records --------------------------------------------------------


def test_a_dead_letter_as_the_worker_writes_it_reads_back():
    written = letter(version_id="v9")
    read = dl.parse_dead_letter(written.dumps())
    assert read.asdict() | {"image": None} == written.asdict() | {"image": None}
    assert read.image == written.image and read.image.identity == "images/a/1.png@v9"
    invalid = dl.parse_dead_letter(letter("invalid_event", "events", image=False, event="{oops").dumps())
    assert invalid.image is None and invalid.event == "{oops"


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"\xff\xfe",
        b"not json",
        b"[1, 2]",
        b'{"kind": "x"}',
        b'{"stage": "s", "kind": "k", "reason": "r", "image": {"bucket": "b"}}',
        b'{"stage": "s", "kind": "k", "reason": "r", "image": {"bucket": "b", "key": "k", "size": "3"}}',
        b'{"stage": "s", "kind": "k", "reason": "r", "image": "b/k"}',
        b'{"stage": "s", "kind": "k", "reason": "r", "partition": true}',
        b'{"stage": "s", "kind": "k", "reason": "r", "failed_at": "yesterday"}',
        b'{"stage": "s", "kind": "k", "reason": "r", "event": {"Records": []}}',
    ],
)
def test_anything_else_on_the_topic_is_refused_with_a_reason(value):
    with pytest.raises(ValueError, match=r"\w"):
        dl.parse_dead_letter(value)


# -- choosing -------------------------------------------------------------------------


def test_filters_repeat_or_take_comma_lists():
    assert dl.split_values(["a,b", " c ", ",", "a"]) == {"a", "b", "c"}
    assert dl.split_values(None) == frozenset()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1796113800", 1796113800.0),
        ("1796113800.5", 1796113800.5),
        ("2026-12-01T08:30:00Z", T0),
        ("2026-12-01T08:30:00", T0),  # UTC unless it says
        ("2026-12-01 09:30:00+01:00", T0),
        ("2026-12-01", T0 - 8.5 * 3600),
    ],
)
def test_times_are_iso_or_unix_seconds(text, seconds):
    assert dl.parse_time(text) == seconds


@pytest.mark.parametrize("text", ["yesterday", "nan", "inf", "2026-13-01", ""])
def test_a_time_that_is_neither_is_refused(text):
    with pytest.raises(ValueError, match=r"ISO 8601|finite"):
        dl.parse_time(text)


def test_selection_by_kind_stage_and_time_oldest_first():
    records = [
        found(letter("predictor_failed", "inference", at=T0 + 20), offset=0),
        found(letter("object_not_found", "preprocess", at=T0 + 10), offset=1),
        found(letter("invalid_event", "events", image=False, event="x", at=T0), offset=2),
        found(letter("predictor_rejected", "inference", at=T0 + 30), offset=3),
    ]
    kinds = lambda chosen: [f.letter.kind for f in chosen]  # noqa: E731
    assert kinds(dl.choose(records, dl.Selection())) == [
        "invalid_event", "object_not_found", "predictor_failed", "predictor_rejected"]
    assert kinds(dl.choose(records, dl.Selection(stages=frozenset({"inference"})))) == [
        "predictor_failed", "predictor_rejected"]
    assert kinds(dl.choose(records, dl.Selection(kinds=frozenset({"predictor_failed", "invalid_event"})))) == [
        "invalid_event", "predictor_failed"]
    # both ends inclusive
    assert kinds(dl.choose(records, dl.Selection(since=T0 + 10, until=T0 + 20))) == [
        "object_not_found", "predictor_failed"]
    assert dl.choose(records, dl.Selection(kinds=frozenset({"predictor_failed"}), stages=frozenset({"events"}))) == []


def test_the_command_line_takes_the_filters():
    args = dl.build_parser().parse_args(
        ["redrive", "--kind", "predictor_failed,object_not_found", "--kind", "predictor_rejected",
         "--stage", "inference", "--since", "2026-12-01T08:30:00Z", "--limit", "5", "--dry-run"])
    assert dl.split_values(args.kind) == {"predictor_failed", "object_not_found", "predictor_rejected"}
    assert (args.since, args.until, args.limit, args.dry_run, args.verify, args.include_invalid) == (
        T0, None, 5, True, True, False)
    assert dl.build_parser().parse_args(["list"]).last == 20


@pytest.mark.parametrize("argv", [["list", "--since", "soon"], ["list", "-n", "0"], ["redrive", "--limit", "-1"],
                                  ["list", "--include-invalid"], ["purge"]])
def test_the_command_line_refuses_nonsense(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        dl.build_parser().parse_args(argv)
    assert exit_.value.code == 2


# -- showing untrusted text -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("digits/7 copy+1 100% (a).png", "digits/7 copy+1 100% (a).png"),
        ("ünï cödé", "ünï cödé"),
        ("a\nb\r\tc", "a\\nb\\r\\tc"),
        ("\x1b[2J\x1b]0;pwned\x07", "\\x1b[2J\\x1b]0;pwned\\x07"),
        ("\x00\x7f\x9b", "\\x00\\x7f\\x9b"),  # NUL, DEL, the C1 CSI
        ("gpj.\u202eexe", "gpj.\\u202eexe"),  # right-to-left override
        ("a\u2028b\u200bc", "a\\u2028b\\u200bc"),  # line separator, zero-width space
        ("tag\U000e0041", "tag\\U000e0041"),
        ("a\\nb", "a\\\\nb"),  # a backslash the text spelt out is doubled
    ],
)
def test_escape_leaves_one_printable_line(text, shown):
    assert dl.escape(text) == shown
    assert dl.escape(text).isprintable()


def test_a_crafted_key_cannot_forge_table_lines_or_reach_the_terminal():
    forged = "x.png\n2026-12-01 08:30:00  events  invalid_event  s3://images/forged  \x1b[31mall fine\x1b[0m"
    records = [found(letter(key=forged, reason="boom\r\x1b[2Koverwritten")),
               found(letter("invalid_event", "events", image=False, event="{", reason="not JSON"), offset=1)]
    lines = dl.table(records)
    assert len(lines) == 3  # header and one line per dead letter
    assert lines[0].split() == ["time", "(UTC)", "stage", "kind", "object", "reason"]
    text = "\n".join(lines)
    assert "\x1b" not in text and "\r" not in text and all(line.isprintable() for line in lines)
    assert "s3://images/x.png\\n2026-12-01" in lines[1] and "boom\\r\\x1b[2Koverwritten" in lines[1]
    assert lines[1].startswith("2026-12-01 08:30:00  inference  predictor_failed")
    assert "(notification)" in lines[2] and lines[2].endswith("not JSON")


def test_long_reasons_and_keys_are_cut_and_the_columns_line_up():
    records = [found(letter(key="k" * 500, reason="r" * 5000)), found(letter(key="short.png", reason="short"))]
    header, first, second = dl.table(records)
    assert first.endswith("r" * (dl.REASON_WIDTH - 3) + "...")
    assert "s3://images/" + "k" * (dl.OBJECT_WIDTH - 3 - len("s3://images/")) + "...  " in first
    assert header.index("reason") == first.index("rrrr") == second.rindex("short")
    assert header.index("object") == first.index("s3://") == second.index("s3://")


def test_json_lines_hold_every_field_in_ascii():
    record = letter(key="ünï\n.png", reason="a\x1bb")
    line = dl.as_json(dl.Found(record, 3, 17, record.failed_at))
    assert line.isascii() and "\n" not in line and "\x1b" not in line
    doc = json.loads(line)
    assert doc["time"] == "2026-12-01T08:30:00Z"
    assert doc["image"]["key"] == "ünï\n.png" and doc["image"]["identity"] == "images/ünï\n.png@e1"
    assert (doc["kind"], doc["stage"], doc["reason"]) == ("predictor_failed", "inference", "a\x1bb")
    assert (doc["topic"], doc["partition"], doc["offset"], doc["index"]) == ("s3-events", 1, 7, 0)
    assert doc["dead_letter"] == {"partition": 3, "offset": 17}


# -- the notification a redrive publishes -------------------------------------------------


@pytest.mark.parametrize("key", ["a/1.png", "ünï cödé+x 100% (a)/7 copy+1.png", "new\nline/?&=#.png"])
@pytest.mark.parametrize("version_id", ["", "3f1c-v2"])
def test_the_redriven_notification_names_exactly_that_object_version(key, version_id):
    ref = letter(key=key, version_id=version_id).image
    kafka_key, value = dl.redrive_notification(ref, endpoint="http://s3.example:9000")
    assert kafka_key == f"images/{key}".encode()
    (parsed,) = parse_notification(value)
    assert isinstance(parsed, ObjectRef)
    assert (parsed.bucket, parsed.key, parsed.etag, parsed.version_id, parsed.size) == (
        "images", key, "e1", version_id, 321)
    assert parsed.event_name == "s3:ObjectCreated:Put" and parsed.identity == ref.identity
    doc = json.loads(value)
    (record,) = doc["Records"]
    assert doc["EventName"] == "s3:ObjectCreated:Put" and doc["Key"] == f"images/{key}"
    assert record["source"]["userAgent"] == dl.REDRIVE_AGENT
    assert record["eventTime"] == "2026-12-01T08:29:59.000Z"  # the original's
    assert "contentType" not in record["s3"]["object"]  # the dead letter does not know it


# -- redrive: what is sent, once, and what is not ----------------------------------------


def run(coro):
    return asyncio.run(coro)


class Sink:
    """A publisher that records what it was given, failing for chosen labels."""

    def __init__(self, fail: set[str] = frozenset()) -> None:
        self.sent: list[dl.Candidate] = []
        self.fail = fail

    async def __call__(self, item: dl.Candidate) -> None:
        if any(part in item.label for part in self.fail):
            raise ConnectionError("broker went away")
        self.sent.append(item)


def mixed() -> list[dl.Found]:
    """Seven dead letters, oldest first: 3 about a/1.png@e1, 1 about its new version, 2 of
    one invalid notification, 1 of another, and 1 with nothing to redrive."""
    records = [
        letter(key="a/1.png", at=T0),
        letter("object_not_found", "preprocess", key="a/1.png", at=T0 + 1),
        letter("invalid_event", "events", image=False, event='{"Records": 1}', at=T0 + 2),
        letter(key="a/1.png", etag="e2", at=T0 + 3),  # the same key, new content: another image
        letter(key="a/1.png", at=T0 + 4),
        letter("invalid_event", "events", image=False, event='{"Records": 1}', at=T0 + 5),
        letter("invalid_event", "events", image=False, event="not json", at=T0 + 6),
        letter("bad_input", "events", image=False, at=T0 + 7),
    ]
    return [found(r, offset=i) for i, r in enumerate(records)]


def test_each_object_version_is_sent_once_and_every_dead_letter_is_accounted_for():
    sink = Sink()
    outcome = run(dl.redrive(mixed(), publish=sink))
    assert [item.label for item in sink.sent] == ["s3://images/a/1.png@e1", "s3://images/a/1.png@e2"]
    assert sink.sent == outcome.sent
    assert [len(item.letters) for item in outcome.sent] == [3, 1]
    assert outcome.sent[0].kinds == "object_not_found,predictor_failed"
    assert outcome.skipped == {dl.DUPLICATE: 2, dl.INVALID: 3, dl.NOTHING: 1}
    assert outcome.chosen == 8 == len(outcome.sent) + sum(outcome.skipped.values())
    for item in outcome.sent:
        assert item.key == b"images/a/1.png"
        assert parse_notification(item.value) == [item.ref.derive(event_name="s3:ObjectCreated:Put")]


def test_invalid_notifications_go_as_stored_only_when_asked():
    sink = Sink()
    outcome = run(dl.redrive(mixed(), include_invalid=True, publish=sink))
    events = [item for item in sink.sent if item.ref is None]
    assert [(item.key, item.value) for item in events] == [(None, b'{"Records": 1}'), (None, b"not json")]
    assert outcome.skipped == {dl.DUPLICATE: 3, dl.NOTHING: 1}
    assert len(outcome.sent) == 4 and outcome.chosen == len(outcome.sent) + sum(outcome.skipped.values())


def test_limit_sends_the_oldest_first_and_says_what_it_held_back():
    sink = Sink()
    outcome = run(dl.redrive(mixed(), include_invalid=True, limit=2, publish=sink))
    assert [item.label for item in sink.sent] == ["s3://images/a/1.png@e1", outcome.sent[1].label]
    assert outcome.sent[1].value == b'{"Records": 1}'
    assert outcome.skipped[dl.OVER_LIMIT] == 2  # the new version and "not json"
    assert outcome.chosen == len(outcome.sent) + sum(outcome.skipped.values())


def test_objects_gone_or_replaced_are_checked_and_skipped():
    checked: list[str] = []

    async def check(ref: ObjectRef) -> str | None:
        checked.append(ref.identity)
        return dl.GONE if ref.etag == "e1" else None

    sink = Sink()
    outcome = run(dl.redrive(mixed(), check=check, publish=sink))
    assert sorted(checked) == ["images/a/1.png@e1", "images/a/1.png@e2"]  # once per version
    assert [item.label for item in sink.sent] == ["s3://images/a/1.png@e2"]
    assert outcome.skipped[dl.GONE] == 3  # the version's three dead letters
    assert [(item.label, why) for item, why in outcome.held] == [("s3://images/a/1.png@e1", dl.GONE)]


def test_a_dry_run_publishes_nothing_and_says_what_it_would_send():
    outcome = run(dl.redrive(mixed(), publish=None))
    assert [item.label for item in outcome.sent] == ["s3://images/a/1.png@e1", "s3://images/a/1.png@e2"]
    lines = dl.summary(outcome, read=9, events_topic="s3-events", dry_run=True)
    assert lines[:3] == [
        "chosen: 8 dead letters (of 9 read)",
        "would send: 2 notifications to s3-events (2 object versions, 0 invalid notifications as stored)",
        "skipped: 6 dead letters:",
    ]
    assert f"       3  {dl.INVALID}" in lines and f"       2  {dl.DUPLICATE}" in lines
    one = dl.Outcome(chosen=1, sent=outcome.sent[:1])
    assert dl.summary(one, read=1, events_topic="s3-events", dry_run=False) == [
        "chosen: 1 dead letter (of 1 read)",
        "sent: 1 notification to s3-events (1 object version, 0 invalid notifications as stored)",
        "skipped: 0 dead letters",
    ]


def test_a_message_the_broker_did_not_take_is_reported_not_counted_as_sent():
    outcome = run(dl.redrive(mixed(), publish=Sink(fail={"@e2"})))
    assert [item.label for item in outcome.sent] == ["s3://images/a/1.png@e1"]
    assert [(item.label, error) for item, error in outcome.failed] == [
        ("s3://images/a/1.png@e2", "not sent: ConnectionError: broker went away")]
    assert outcome.chosen == len(outcome.sent) + sum(outcome.skipped.values())


class FakeS3:
    def __init__(self, answer) -> None:
        self.answer, self.calls = answer, []

    async def head_object(self, **params):
        self.calls.append(params)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "HeadObject")


@pytest.mark.parametrize(
    ("answer", "version_id", "verdict"),
    [
        ({"ETag": '"e1"'}, "", None),
        ({"ETag": '"e2"'}, "", dl.CHANGED),
        ({"ETag": '"e2"'}, "v1", None),  # a version id names immutable content
        (client_error("404", 404), "", dl.GONE),
        (client_error("NoSuchVersion", 404), "v1", dl.GONE),
        (client_error("403", 403), "", f"{dl.CHECK_FAILED}: 403"),
    ],
)
def test_the_s3_check_asks_for_that_version(answer, version_id, verdict):
    s3 = FakeS3(answer)
    ref = letter(version_id=version_id).image
    assert run(dl.head_check(s3)(ref)) == verdict
    assert s3.calls == [{"Bucket": "images", "Key": "a/1.png", **({"VersionId": "v1"} if version_id else {})}]


def test_an_unreachable_s3_stops_the_redrive_and_names_the_way_out():
    s3 = FakeS3(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    with pytest.raises(dl.DeadLetterError, match="--no-verify"):
        run(dl.head_check(s3)(letter().image))


# -- where the broker is ---------------------------------------------------------------


def test_the_broker_comes_from_the_environment_else_the_running_stack(tmp_path):
    secret = secrets.token_hex(8) + " x"
    (tmp_path / "stack.env").write_text(
        "# written by `streamapp up`\nBROKER_URL=tansu://127.0.0.1:1234\n"
        f"AWS_ENDPOINT_URL_S3=http://127.0.0.1:9\nAWS_ACCESS_KEY_ID=stack\nAWS_SECRET_ACCESS_KEY='{secret}'\n")
    env = dl.client_env(tmp_path, {"PATH": "/bin"})
    assert env["BROKER_URL"] == "tansu://127.0.0.1:1234" and env["AWS_SECRET_ACCESS_KEY"] == secret
    env = dl.client_env(tmp_path, {"BROKER_URL": "kafka://k:9092", "AWS_ENDPOINT_URL_S3": "https://s3.example"})
    assert env["BROKER_URL"] == "kafka://k:9092" and "AWS_ACCESS_KEY_ID" not in env
    assert dl.client_env(tmp_path / "none", {}) == {}


def test_without_a_broker_the_command_says_how_to_get_one(tmp_path, capsys):
    assert dl.main(["list", "--data-dir", str(tmp_path)], environ={}) == 1
    assert "set BROKER_URL, or run `streamapp up`" in capsys.readouterr().err


def test_the_streamapp_command_has_the_subcommand(capsys):
    with pytest.raises(SystemExit):
        cli.main(["dead-letters", "redrive", "--help"])
    out = capsys.readouterr().out
    assert "--include-invalid" in out and "Idempotent" in out and "bucket/key@version-or-etag" in out


# -- the whole story, on the real stack ----------------------------------------------------


def dead_letter_kinds(stack) -> Counter:
    try:
        return Counter(http_json(stack.web_url(0) + "/stats/")["dead_letters_by_kind"])
    except OSError:  # 503 while recovering, or not answering yet
        return Counter()


def counted(stack) -> int:
    """Images worker 0 archived and set in the table so far, replays included; -1 while it does not answer."""
    try:
        return http_json(stack.web_url(0) + "/stats/")["worker"]["counters"].get("counted", 0)
    except OSError:
        return -1


def streamapp(capsys, *argv: str) -> str:
    capsys.readouterr()
    assert cli.main(list(argv)) == 0
    return capsys.readouterr().out


@pytest.mark.integration
def test_images_a_predictor_rejected_are_counted_once_after_a_redrive_however_often(
        tmp_path, samples, capsys, monkeypatch):
    for name in ("BROKER_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "STREAMAPP_DEAD_LETTER_TOPIC",
                 "STREAMAPP_EVENTS_TOPIC"):
        monkeypatch.delenv(name, raising=False)  # the commands find the stack by its stack.env
    # a predictor deployed with a limit no request meets: it rejects every image (HTTP 400)
    stack = start_stack(tmp_path / "stack", predictor_args=["--max-batch", "0"])
    data = ["--data-dir", str(stack.data_dir)]
    try:
        labels = tricky_copies(samples[:6], tmp_path, folder="rejected")
        label = {key.removeprefix("rejected/"): digit for key, digit in labels.items()}
        uploaded = upload_files(stack, [tmp_path / "rejected"], prefix="redrive/ünï+% (a)/")
        # the store announces every image twice (at least once): two dead letters per image
        produce(stack, stack.settings.events_topic, [minio_notification(u.ref) for u in uploaded])
        produce(stack, stack.settings.events_topic, [(None, b"not json \x1b[2J")])
        expected_dead = Counter({"predictor_rejected": 2 * len(uploaded), "invalid_event": 1})
        wait_for(lambda: dead_letter_kinds(stack) == expected_dead, timeout=SETTLE, what=f"dead letters {expected_dead}")
        assert digit_counts(stack) == Counter()

        # list: each image, its kind, stage and reason; the invalid notification escaped
        listed = streamapp(capsys, "dead-letters", "list", *data, "-n", "100")
        lines = listed.splitlines()
        assert len([line for line in lines if "predictor_rejected" in line]) == 2 * len(uploaded)
        for u in uploaded:
            rows = [line for line in lines if f"s3://images/{u.ref.key}  " in line]
            assert len(rows) == 2 and all("inference" in row and "answered 400" in row for row in rows)
        (invalid,) = [line for line in lines if "invalid_event" in line]
        assert "(notification)" in invalid and "not JSON" in invalid and "\x1b" not in listed
        as_json = [json.loads(line) for line in streamapp(
            capsys, "dead-letters", "list", *data, "--json", "--kind", "predictor_rejected", "-n", "5").splitlines()]
        assert len(as_json) == 5 and {d["stage"] for d in as_json} == {"inference"}
        assert {d["image"]["identity"] for d in as_json} <= {u.ref.identity for u in uploaded}

        # the fix: the predictor with its default limits, on the same port
        stack.stop_predictor()
        stack.config.predictor_args = []
        stack.start_predictor()
        # and one image deleted meanwhile: the redrive leaves it out
        gone, *kept = uploaded
        s3_call(stack, "delete_object", Bucket=gone.ref.bucket, Key=gone.ref.key)
        expected = Counter(label[u.ref.key.removeprefix("redrive/ünï+% (a)/")] for u in kept)

        dry = streamapp(capsys, "dead-letters", "redrive", *data, "--kind", "predictor_rejected", "--dry-run")
        assert len([line for line in dry.splitlines() if line.startswith("would send  ")]) == len(kept)
        assert f"skip        s3://images/{gone.ref.key}@{gone.ref.etag}  ({dl.GONE})" in dry
        assert digit_counts(stack) == Counter()

        # the redrive: every other image once, though each has two dead letters
        before = counted(stack)
        out = streamapp(capsys, "dead-letters", "redrive", *data, "--kind", "predictor_rejected")
        assert f"chosen: {2 * len(uploaded)} dead letters" in out
        assert f"sent: {len(kept)} notifications to s3-events ({len(kept)} object versions" in out
        assert f"{len(kept):>6}  {dl.DUPLICATE}" in out and f"     2  {dl.GONE}" in out
        assert wait_counts(stack, expected) == expected
        assert counted(stack) == before + len(kept)

        # a second redrive is processed in full and counts nothing again
        out = streamapp(capsys, "dead-letters", "redrive", *data, "--kind", "predictor_rejected")
        assert f"sent: {len(kept)} notifications" in out
        wait_for(lambda: counted(stack) >= before + 2 * len(kept), timeout=SETTLE, what="the second redrive processed")
        assert digit_counts(stack) == expected
        # nothing failed on the way: no new dead letters
        assert dead_letter_kinds(stack) == expected_dead
    finally:
        stack.stop()
