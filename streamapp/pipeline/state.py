"""Table state: per-partition value counts and how they are stored, pure.

Reads and writes nothing; :class:`streamapp.kafka.store.CountingStore` (the
tables' RocksDB store) uses these to keep, in each partition's database, how
many keys hold each value beside the entries, in the same write batch: for
``images`` (image identity -> digit) the digit counts of that partition, for
``dead-letters`` (failed input -> kind) the counts per kind. How the counts of
all partitions are combined for the cluster is in :mod:`streamapp.pipeline.totals`;
why the state is shaped this way is in docs/DESIGN.md ("State").
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


def apply_change(counts: Counter[bytes], old: bytes | None, new: bytes | None) -> None:
    """Update ``counts`` for one key going from ``old`` to ``new`` (None: absent)."""
    if old == new:
        return
    if old is not None:
        counts[old] -= 1
        if counts[old] <= 0:
            del counts[old]
    if new is not None:
        counts[new] += 1
