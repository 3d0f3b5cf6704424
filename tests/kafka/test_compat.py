"""streamapp.kafka: the versions it accepts, and the upstream behaviours its patches answer.

Each test in the second half reads the installed Faust or aiokafka and checks
that the behaviour a patch in streamapp/kafka/ works around, or the hook it
relies on, is still there. An upgrade that fixes or moves it fails here, which
is the moment to review (and perhaps drop) that patch.
"""

from __future__ import annotations

import configparser
import inspect
import re
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.producer.message_accumulator import MessageAccumulator, MessageBatch
from faust.stores import rocksdb
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.transport.producer import ProducerBuffer

from streamapp import kafka
from streamapp.embedded import tansu
from streamapp.kafka import recovery, transport

ROOT = Path(__file__).resolve().parents[2]


# -- the version guard ----------------------------------------------------------------------


def test_the_supported_versions_pass():
    kafka.check_versions(kafka.SUPPORTED)


@pytest.mark.parametrize(
    "installed, named",
    [
        ({"faust-streaming": "0.15.4", "aiokafka": "0.14.0"}, "faust-streaming 0.15.4 (needs 0.15.3)"),
        ({"faust-streaming": "0.15.3", "aiokafka": "0.13.0"}, "aiokafka 0.13.0 (needs 0.14.0)"),
        ({"faust-streaming": "0.15.3"}, "aiokafka missing (needs 0.14.0)"),
    ],
)
def test_other_versions_are_refused_with_what_to_do(installed, named):
    with pytest.raises(kafka.UnsupportedVersion, match=re.escape("written for faust-streaming==0.15.3")) as refused:
        kafka.check_versions(installed)
    assert named in str(refused.value)
    assert "pip install -e ." in str(refused.value)


def test_setup_cfg_pins_the_supported_versions():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    pins = dict(line.split("==") for line in config["options"]["install_requires"].split() if "==" in line)
    for name, version in kafka.SUPPORTED.items():
        assert pins[name] == version, name


# -- what the patches rely on ------------------------------------------------------------------


def source(obj: object) -> str:
    # mode's @Service.task wraps the coroutine function in a ServiceTask
    return inspect.getsource(getattr(obj, "fun", obj))  # type: ignore[arg-type]


def test_resuming_flow_still_empties_the_changelog_queue():
    """transport 5.: the queue Faust's recovery reads is cleared when flow control resumes."""
    assert "clear_on_resume=True" in source(TableManager.changelog_queue.fget)


def test_recovery_still_seeks_the_streams_before_resuming_flow():
    """transport 5.: standby records fetched between these two steps are dropped."""
    completed = source(Recovery.on_recovery_completed)
    assert completed.index("perform_seek()") < completed.index("self.app.flow_control.resume()")
    assert "standby" not in completed.split("perform_seek()")[0].split("resume_partitions(")[-1]


def test_recovery_still_never_forgets_a_partitions_buffer_size():
    """transport 6.: Faust keeps the size a changelog partition got in its first role."""
    module = source(inspect.getmodule(Recovery))
    assert "buffer_sizes.clear()" not in module and "buffer_sizes.pop(" not in module
    assert "bufsize = buffer_sizes[tp] = table.recovery_buffer_size" in source(Recovery._slurp_changelogs)


def test_producer_buffer_size_still_counts_only_messages_not_yet_taken():
    """transport 4.: the sender task takes a message out of the queue before it is sent."""
    assert "self.pending._queue" in source(ProducerBuffer.size.fget)
    handle = source(ProducerBuffer._handle_pending)
    assert handle.index("await get_pending()") < handle.index("await send_pending(msg)")


def test_recovery_builds_active_offsets_after_their_highwaters():
    """recovery: the bulk restore runs in _build_offsets, which needs the actives' highwaters first."""
    restart = source(Recovery._restart_recovery)
    highwaters = restart.index('consumer, assigned_active_tps, active_highwaters, "active"')
    offsets = restart.index('consumer, assigned_active_tps, active_offsets, "active"')
    assert highwaters < offsets
    assert list(inspect.signature(Recovery._build_offsets).parameters) == ["self", "consumer", "tps", "destination",
                                                                          "title"]
    assert "self._recovery = Recovery(" in source(TableManager.recovery.fget)
    assert issubclass(recovery.TableManager, TableManager) and issubclass(recovery.Recovery, Recovery)


def test_the_rocksdb_store_still_has_the_extension_points_the_counting_store_overrides():
    for name in ("_set", "_del", "apply_changelog_batch", "_db_for_partition", "_visible_keys", "_visible_items",
                 "revoke_partitions", "reset_state", "persisted_offset", "set_persisted_offset"):
        assert callable(getattr(rocksdb.Store, name)), name
    assert rocksdb.Store.offset_key == b"__faust\0offset__"
    assert list(inspect.signature(rocksdb.Store.apply_changelog_batch).parameters) == ["self", "batch", "to_key",
                                                                                      "to_value"]


def test_every_patch_module_is_behind_the_version_guard():
    for module in (transport, recovery):
        assert module.__name__.startswith("streamapp.kafka.")


def test_the_fetcher_still_reads_its_wait_for_every_request_and_says_when_records_came():
    """embedded g.: TansuFetcher sets ``_fetch_max_wait_ms`` after each fetch from
    what ``_proc_fetch_request`` returns (True once a fetch added records)."""
    assert "self._fetch_max_wait_ms," in source(Fetcher._get_actions_per_node)
    proc = source(Fetcher._proc_fetch_request)
    assert "needs_wakeup = True" in proc and proc.rstrip().endswith("return needs_wakeup")
    assert list(inspect.signature(Fetcher._proc_fetch_request).parameters) == ["self", "assignment", "node_id",
                                                                              "request"]
    assert issubclass(tansu.TansuFetcher, Fetcher)


def test_the_fetcher_still_reads_its_minimum_bytes_per_request_and_keeps_high_watermarks():
    """transport, spaced fetches: SpacedFetcher sets ``_fetch_min_bytes`` and
    ``_fetch_max_wait_ms`` for the next request, and counts a fetch's records
    from the ``highwater`` each answer leaves in the partition's state."""
    actions = source(Fetcher._get_actions_per_node)
    assert "self._fetch_max_wait_ms," in actions and "self._fetch_min_bytes," in actions
    assert "self._fetch_max_bytes," in actions
    assert "tp_state.highwater = highwater" in source(Fetcher._proc_fetch_request)
    for call in ("request.topics", "assignment.state_value(tp)", "assignment.active"):
        assert call in source(Fetcher._proc_fetch_request)
    assert issubclass(transport.SpacedFetcher, Fetcher) and issubclass(tansu.TansuFetcher, transport.SpacedFetcher)


def test_the_producer_still_builds_one_accumulator_that_drains_per_partition_linger():
    """transport, spaced requests: aiokafka's producer keeps its accumulator in
    ``_message_accumulator``; a batch is due when its own ``_linger_time``
    since ``_ctime`` is over, and the drain skips batches that are not due."""
    assert "self._message_accumulator = MessageAccumulator(" in source(AIOKafkaProducer.__init__)
    assert "lifetime >= self._linger_time" in source(MessageBatch.remaining_linger)
    assert "self._ctime = time.monotonic()" in source(MessageBatch.__init__)
    drain = source(MessageAccumulator.drain_by_nodes)
    assert "self._batches[tp][0].remaining_linger()" in drain and "self._cluster.leader_for_partition(tp)" in drain
    assert list(inspect.signature(MessageAccumulator.drain_by_nodes).parameters) == ["self", "ignore_nodes",
                                                                                    "muted_partitions"]



def test_no_fetch_goes_to_a_node_while_its_last_one_is_processed():
    """embedded h.: TansuFetcher holds a spaced fetch inside ``_proc_fetch_request``
    before sending it; aiokafka counts the node in flight until that call is
    done (no other fetch to it meanwhile) and takes a False from a call that
    was cancelled as a fetch without records."""
    routine = source(Fetcher._fetch_requests_routine)
    assert "self._in_flight.add(node_id)" in routine and "self._in_flight.discard(node_id)" in routine
    assert "self._proc_fetch_request(assignment, node_id, request)" in routine
    assert "elif node_id in self._in_flight:" in source(Fetcher._get_actions_per_node)
    assert "any(fut.result() for fut in done_pending)" in routine


def test_the_fetcher_hands_out_partitions_in_the_order_of_its_records_dict():
    """transport, fetch order: aiokafka's ``fetched_records`` drains ``_records``
    (partition -> FetchResult) in its order, up to ``max_records``, deleting a
    partition once drained; a part-drained one keeps its place, which
    SpacedFetcher moves behind the others."""
    fetched = source(Fetcher.fetched_records)
    assert "for tp in list(self._records.keys()):" in fetched
    assert "records = res_or_error.getall(max_records)" in fetched
    assert "del self._records[tp]" in fetched
    assert list(inspect.signature(Fetcher.fetched_records).parameters) == ["self", "partitions", "timeout",
                                                                           "max_records"]
