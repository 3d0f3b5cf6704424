"""The counting store and the totals' wire format, on a real RocksDB, without servers."""

from __future__ import annotations

from collections import Counter

import pytest
from faust.events import Event
from faust.types import TP

from streamapp.pipeline.state import COUNTS_KEY, apply_change, decode_counts, encode_counts
from streamapp.pipeline.totals import decode_partition_counts, encode_partition_counts
from tests import support
from tests.support import counting_store


def test_apply_change_counts_each_key_once_per_value():
    counts: Counter[bytes] = Counter()
    apply_change(counts, None, b"3")
    apply_change(counts, b"3", b"3")  # a replay: no change
    apply_change(counts, None, b"7")
    assert counts == Counter({b"3": 1, b"7": 1})
    apply_change(counts, b"3", b"5")  # relabelled
    apply_change(counts, b"7", None)  # deleted
    assert counts == Counter({b"5": 1})


def test_counts_encoding_round_trips_json_values():
    counts = Counter({b"3": 2, b'"object_not_found"': 1, b'"\\u00fc"': 4})
    assert decode_counts(encode_counts(counts)) == counts
    assert decode_counts(None) == Counter()
    assert encode_counts(Counter({b"1": 0})) == b"{}"  # zeros are not kept


def test_partition_counts_wire_format_round_trips():
    counts = {0: {b"3": 2}, 7: {b'"empty_image"': 1}}
    assert decode_partition_counts(encode_partition_counts(counts)) == counts


@pytest.fixture
def store(tmp_path):
    yield from counting_store(tmp_path, value_type=int)


def changelog_event(store, partition: int, offset: int, key: str, value: int | None) -> Event:
    return support.changelog_event(store, partition, offset, key, None if value is None else str(value).encode())


def test_changelog_batches_keep_counts_entries_and_offset_together(store):
    tp = TP(store.table.changelog_topic_name, 2)
    batch = [
        changelog_event(store, 2, 0, "a@1", 3),
        changelog_event(store, 2, 1, "b@1", 3),
        changelog_event(store, 2, 2, "a@1", 3),  # a duplicate record: counted once
        changelog_event(store, 2, 3, "c@1", 8),
        changelog_event(store, 2, 4, "b@1", None),  # deleted
    ]
    store.apply_changelog_batch(batch, to_key=None, to_value=None)
    assert store.partition_counts(2) == Counter({b"3": 1, b"8": 1})
    assert store.persisted_offset(tp) == 4
    # a restart (a new store on the same files) finds the counts without a scan
    store._dbs.clear()
    store._counts.clear()
    assert store.partition_counts(2) == Counter({b"3": 1, b"8": 1})
    # replaying the same records after a crash changes nothing
    store.apply_changelog_batch(batch, to_key=None, to_value=None)
    assert store.partition_counts(2) == Counter({b"3": 1, b"8": 1})


def test_partitions_are_counted_apart_and_counts_are_not_entries(store):
    store.apply_changelog_batch([changelog_event(store, 0, 0, "x@1", 1), changelog_event(store, 1, 0, "y@1", 1)],
                                to_key=None, to_value=None)
    assert store.partition_counts(0) == Counter({b"1": 1})
    assert store.partition_counts(1) == Counter({b"1": 1})
    assert store.partition_counts(5) == Counter()
    keys = list(store._visible_keys(store._db_for_partition(0)))
    assert keys == [b'"x@1"'] and COUNTS_KEY not in keys


def test_revoked_partitions_forget_their_cached_counts(store):
    store.apply_changelog_batch([changelog_event(store, 3, 0, "z@1", 4)], to_key=None, to_value=None)
    assert store.partition_counts(3)
    store.revoke_partitions(store.table, {TP(store.table.changelog_topic_name, 3)})
    assert 3 not in store._counts
    assert store.partition_counts(3) == Counter({b"4": 1})  # read again from disk
