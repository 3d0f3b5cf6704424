"""Everything streamapp changes inside Faust and aiokafka, in one place.

Reads: the installed versions of faust-streaming and aiokafka. Writes:
nothing. Each module here subclasses or patches private parts of those two
libraries, for the versions named in :data:`SUPPORTED` (the same pins as
setup.cfg); importing this package refuses any other version with a clear
message, since an upgrade can silently change delivery. Each fix says which
upstream behaviour it answers, and tests/kafka/test_compat.py checks that
behaviour is still there, so an upgrade that fixes or changes it fails a
test rather than the data.

    transport   the worker's Kafka transport: rebalance, standby and flush faults
    recovery    table recovery, restoring partitions that are behind in bulk first
    store       the tables' RocksDB store, counting values per partition
    streams     a stream that batches by a BatchPolicy

The embedded broker's own work-arounds are in :mod:`streamapp.embedded.tansu`.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata

#: distribution -> the version every patch here was written and tested for
SUPPORTED: Mapping[str, str] = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}


class UnsupportedVersion(ImportError):
    """An installed Faust or aiokafka other than the one streamapp's patches were written for."""


def check_versions(installed: Mapping[str, str] | None = None) -> None:
    """Raise :class:`UnsupportedVersion` unless every :data:`SUPPORTED` version is installed."""
    found = dict(installed) if installed is not None else {name: _version(name) for name in SUPPORTED}
    wrong = {name: found.get(name) for name, wanted in SUPPORTED.items() if found.get(name) != wanted}
    if wrong:
        listing = ", ".join(f"{name} {have or 'missing'} (needs {SUPPORTED[name]})" for name, have in wrong.items())
        raise UnsupportedVersion(
            f"streamapp.kafka patches private parts of Faust and aiokafka and was written for "
            f"{', '.join(f'{n}=={v}' for n, v in SUPPORTED.items())}; installed: {listing}. "
            "Install the pinned versions (pip install -e .), or review every patch in streamapp/kafka/ "
            "against the new version and update SUPPORTED and the pins together."
        )


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


check_versions()
