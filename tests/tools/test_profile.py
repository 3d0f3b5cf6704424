"""streamapp.tools.profile: py-spy's raw stacks summed by component (pure, no profiler)."""

from __future__ import annotations

import pytest

from streamapp.tools.profile import EVENT_LOOP, component_of, components, parse_raw

# how py-spy writes a Faust worker's stacks: root first, "function (file:line)"
ROOT = "_run_module_as_main (<frozen runpy>:198);_run_code (<frozen runpy>:88);<module> (faust/__main__.py:4)"
LOOP = "run_forever (asyncio/base_events.py:608);_run_once (asyncio/base_events.py:1936)"
TASK = f"{ROOT};Command.__call__ (faust/cli/base.py:500);{LOOP};Handle._run (asyncio/events.py:80)"
POOL = "Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982);_worker (concurrent/futures/thread.py:83)"
JOB = f"{POOL};_WorkItem.run (concurrent/futures/thread.py:58)"

RAW = f"""\
{TASK};Pipeline.fetch_tensor (streamapp/pipeline/agents.py:140);Storage.get (streamapp/pipeline/storage.py:120);AioBaseClient._make_api_call (aiobotocore/client.py:400);ClientSession._request (aiohttp/client.py:700) 30
{JOB};to_tensor (streamapp/imaging/tensor.py:40);normalize_mnist (streamapp/imaging/normalize.py:210);median (numpy/lib/_function_base_impl.py:3900) 20
{TASK};Fetcher._fetch_requests_routine (aiokafka/consumer/fetcher.py:500);Fetcher._proc_fetch_request (aiokafka/consumer/fetcher.py:600) 15
{TASK};Stream.__anext__ (faust/streams.py:800);TensorRecord.loads (faust/models/base.py:300);loads (json/__init__.py:346) 10
{TASK};Stream.__anext__ (faust/streams.py:800);Stream._c_aiter (faust/streams.py:850) 10
{TASK};Pipeline.tally (streamapp/pipeline/agents.py:300) 5
{ROOT};Command.__call__ (faust/cli/base.py:500);{LOOP};EpollSelector.select (selectors.py:468) 40
{POOL};_worker (concurrent/futures/thread.py:81) 25
{ROOT};Command.__call__ (faust/cli/base.py:500);{LOOP};_SelectorSocketTransport.write (asyncio/selector_events.py:1057) 10

not a stack line
"""


def test_parse_reads_each_stack_and_its_count() -> None:
    stacks = parse_raw(RAW)
    assert len(stacks) == 9
    frames, count = stacks[0]
    assert count == 30
    assert frames[0].startswith("_run_module_as_main") and frames[-1].startswith("ClientSession._request")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (0, "s3 client (aiobotocore)"),  # aiohttp under aiobotocore is S3's
        (1, "transform (imaging)"),  # numpy under the transform, in the thread pool
        (2, "kafka client (aiokafka)"),
        (3, "records (Faust models, JSON)"),  # JSON under Faust's models
        (4, "faust streams, topics, consumer"),
        (5, "agents (pipeline code)"),
        (6, None),  # the loop waiting in epoll: idle
        (7, None),  # a pool thread waiting for a job: idle
        (8, EVENT_LOOP),  # the loop's own work: Faust's command line at the root does not claim it
    ],
)
def test_each_sample_goes_to_the_most_specific_component(line: int, expected: str | None) -> None:
    frames, _ = parse_raw(RAW)[line]
    assert component_of(frames) == expected


def test_a_stack_read_only_in_part_is_taken_whole() -> None:
    assert component_of(["AioEndpoint._send (aiobotocore/endpoint.py:200)", "write (asyncio/selector_events.py:1)"]) \
        == "s3 client (aiobotocore)"


def test_shares_are_of_the_busy_samples_largest_first() -> None:
    shares = components(parse_raw(RAW))
    busy = 30 + 20 + 15 + 10 + 10 + 5 + 10
    assert list(shares)[:2] == ["s3 client (aiobotocore)", "transform (imaging)"]
    assert shares["s3 client (aiobotocore)"] == pytest.approx(30 / busy)
    assert shares[EVENT_LOOP] == pytest.approx(10 / busy)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert components([]) == {}


# uvloop's loop is native: a coroutine's frames follow the runner's directly
UV_MAIN = f"{ROOT};Command.__call__ (faust/cli/base.py:630);Worker.execute_from_commandline (mode/worker.py:264)"
UV_THREAD = ("Thread._bootstrap (threading.py:1002);Thread._bootstrap_inner (threading.py:1045);"
             "WorkerThread.run (mode/threads.py:62);ServiceThread._start_thread (mode/threads.py:211)")


@pytest.mark.parametrize(
    ("stack", "expected"),
    [
        (f"{UV_MAIN};Agent._execute_actor (faust/agents/agent.py:698);Pipeline.preprocess (streamapp/pipeline/agents.py:163);"
         "Storage.get (streamapp/pipeline/storage.py:117)", "s3 client (aiobotocore)"),
        (f"{UV_MAIN};Agent._execute_actor (faust/agents/agent.py:698);Stream._c_aiter (faust/streams.py:1180)",
         "faust streams, topics, consumer"),
        (f"{UV_THREAD};Fetcher._proc_fetch_request (aiokafka/consumer/fetcher.py:747)", "kafka client (aiokafka)"),
        (f"{UV_THREAD};MethodQueueWorker._method_queue_do_work (mode/threads.py:301)", "faust streams, topics, consumer"),
        (UV_MAIN, EVENT_LOOP),
        (UV_THREAD, EVENT_LOOP),
    ],
)
def test_uvloop_stacks_lose_only_their_runner_frames(stack: str, expected: str) -> None:
    assert component_of(stack.split(";")) == expected
