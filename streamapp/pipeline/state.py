"""Table state: per-partition value counts and how they are stored, pure.

Reads and writes nothing; :class:`streamapp.kafka.store.CountingStore` (the
tables' RocksDB store) uses these to keep, in each partition's database, how
many keys hold each value beside the entries, in the same write batch: for
``images`` (image identity -> :func:`image_entry`) the counts per digit of that
partition, and apart from them the counts per digit of the images held for
review (:func:`tally`); for ``dead-letters`` (failed input -> kind) the counts
per kind. How the counts of all partitions are combined for the cluster is in
:mod:`streamapp.pipeline.totals`; why the state is shaped this way is in
docs/DESIGN.md ("State").
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

#: where a partition's counts live in its database; table keys are serialized
#: JSON or raw text, which never start with a NUL byte
COUNTS_KEY = b"\0streamapp.counts"

#: RocksDB sizes per partition database. Faust's defaults (64 MB memtables,
#: a 2 GB block cache each) let a worker's memory grow with the state; these
#: keep it flat (docs/BENCHMARKS.md, "State").
STORE_OPTIONS: Mapping[str, Any] = {
    "write_buffer_size": 2 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * 1024 * 1024,
    "block_cache_size": 2 * 1024 * 1024,
}


def decode_counts(raw: bytes | None) -> Counter[bytes]:
    """A partition's stored counts: serialized value -> number of keys holding it."""
    if not raw:
        return Counter()
    return Counter({value.encode("utf-8"): n for value, n in json.loads(raw).items()})


def encode_counts(counts: Mapping[bytes, int]) -> bytes:
    # values are serialized table values (JSON text): valid UTF-8
    return json.dumps({value.decode("utf-8"): n for value, n in sorted(counts.items()) if n}).encode()


#: what an image held for review is counted under (a JSON string once stored), apart from the digits
REVIEW_TALLY = "review:{digit}"


def image_entry(digit: int, confidence: float | None, review: bool) -> dict[str, Any]:
    """The ``images`` table's value for one image: its digit, the top class
    probability (None: the predictor sent none) and, only when it is held for
    review, ``"review": true``. Entries written before confidences were kept
    are the bare digit (``3``); :func:`tally` counts both."""
    # four places are all a person reads, and the entry is in every replica and the changelog
    entry: dict[str, Any] = {"digit": digit, "confidence": None if confidence is None else round(confidence, 4)}
    if review:
        entry["review"] = True
    return entry


def tally(value: bytes) -> bytes:
    """What a stored value is counted under: the value itself (a dead-letter
    kind, an ``images`` entry of old: the bare digit), except an ``images``
    entry (a JSON object), counted under its digit, the same bytes as an old
    entry so both add up (``b"3"``), or, held for review, under the JSON string
    ``"review:3"``. The counts stay O(values) whatever the confidences."""
    if value[:1] != b"{":
        return value
    try:
        entry = json.loads(value)
        digit = int(entry["digit"])
    except (ValueError, TypeError, KeyError):
        return value  # not an entry of ours: counted as itself, as every value was
    if entry.get("review"):
        return json.dumps(REVIEW_TALLY.format(digit=digit)).encode()
    return str(digit).encode()


def split_digits(counts: Mapping[Any, int]) -> tuple[dict[str, int], dict[str, int]]:
    """The ``images`` totals, decoded (digit -> n, ``"review:<digit>"`` -> n), as
    ``({"0": n0, ..., "9": n9}, {"0": r0, ..., "9": r9})``: the images counted
    under their digit, and those held for review under the digit guessed."""
    return ({str(d): counts.get(d, 0) for d in range(10)},
            {str(d): counts.get(REVIEW_TALLY.format(digit=d), 0) for d in range(10)})


def apply_change(counts: Counter[bytes], old: bytes | None, new: bytes | None) -> None:
    """Update ``counts`` for one key going from ``old`` to ``new`` (None: absent),
    each counted under its :func:`tally`."""
    if old == new:
        return
    if old is not None:
        old = tally(old)
        counts[old] -= 1
        if counts[old] <= 0:
            del counts[old]
    if new is not None:
        counts[tally(new)] += 1
