"""streamapp.pipeline.state: what an images entry holds and what it is counted
under, pure and in the real counting store (RocksDB, no server)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from streamapp.pipeline.state import apply_change, image_entry, split_digits, tally
from tests.support import changelog_event, counting_store


def entry(digit: int, confidence: float | None, review: bool = False) -> bytes:
    """An entry as the table stores it (Faust's JSON serializer)."""
    return json.dumps(image_entry(digit, confidence, review), separators=(",", ":")).encode()


def test_an_entry_holds_the_digit_and_confidence_and_the_review_mark_only_when_held():
    assert image_entry(3, 0.93, False) == {"digit": 3, "confidence": 0.93}
    assert image_entry(3, 0.41, True) == {"digit": 3, "confidence": 0.41, "review": True}
    assert image_entry(5, None, True) == {"digit": 5, "confidence": None, "review": True}


def test_entries_are_counted_under_their_digit_or_review_whatever_the_confidence():
    assert tally(entry(3, 0.93)) == tally(entry(3, 0.9999)) == b"3"
    assert tally(b"3") == b"3"  # an entry written before confidences were kept: the same tally
    assert tally(entry(3, 0.41, True)) == tally(entry(3, None, True)) == b'"review:3"'
    assert tally(b'"object_not_found"') == b'"object_not_found"'  # a dead-letter kind: itself
    assert tally(b'{"not": "ours"}') == b'{"not": "ours"}'  # a foreign value: itself, as before
    assert tally(b"{broken") == b"{broken"


def test_counts_move_between_tallies_and_never_double():
    counts: Counter[bytes] = Counter()
    apply_change(counts, None, b"3")  # counted before the upgrade
    apply_change(counts, b"3", entry(3, 0.95))  # its record replayed after: still one 3
    assert counts == Counter({b"3": 1})
    apply_change(counts, None, entry(8, 0.3, True))
    apply_change(counts, entry(8, 0.3, True), entry(8, 0.3, True))  # a replay
    assert counts == Counter({b"3": 1, b'"review:8"': 1})
    # a replay re-decided under another threshold: moved, not added
    apply_change(counts, entry(3, 0.95), entry(3, 0.95, True))
    assert counts == Counter({b'"review:3"': 1, b'"review:8"': 1})


def test_split_digits_reads_the_decoded_totals():
    digits, review = split_digits(Counter({3: 5, 0: 1, "review:3": 2, "review:9": 1}))
    assert digits == {"0": 1, "1": 0, "2": 0, "3": 5, "4": 0, "5": 0, "6": 0, "7": 0, "8": 0, "9": 0}
    assert review == {**{str(d): 0 for d in range(10)}, "3": 2, "9": 1}
    assert list(digits) == [str(d) for d in range(10)]  # /digits/ keeps its ten keys, in order


@pytest.fixture
def store(tmp_path):
    yield from counting_store(tmp_path, value_type=None)


def test_the_store_counts_old_and_new_entries_together_and_review_apart(store):
    batch = [
        changelog_event(store, 0, 0, "images/old.png@1", b"3"),  # before confidences were kept
        changelog_event(store, 0, 1, "images/new.png@1", entry(3, 0.91)),
        changelog_event(store, 0, 2, "images/unsure.png@1", entry(3, 0.2, True)),
        changelog_event(store, 0, 3, "images/none.png@1", entry(7, None, True)),
        changelog_event(store, 0, 4, "images/old.png@1", entry(3, 0.88)),  # old record replayed after the upgrade
        changelog_event(store, 0, 5, "images/unsure.png@1", entry(3, 0.2, True)),  # a replay
    ]
    store.apply_changelog_batch(batch, to_key=None, to_value=None)
    assert store.partition_counts(0) == Counter({b"3": 2, b'"review:3"': 1, b'"review:7"': 1})
    # a restart reads the same counts back without a scan
    store._dbs.clear()
    store._counts.clear()
    assert store.partition_counts(0) == Counter({b"3": 2, b'"review:3"': 1, b'"review:7"': 1})
