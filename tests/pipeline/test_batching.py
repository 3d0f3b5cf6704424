"""The batching policy: pure decisions, then the stream that applies them.

The stream tests run a real Faust agent in Faust's in-memory test context
(no broker), which is what the policy code plugs into.
"""

from __future__ import annotations

import asyncio
import time

import faust
import pytest

from streamapp.kafka.streams import BatchingStream
from streamapp.pipeline.batching import BatchPolicy


class TestPolicy:
    policy = BatchPolicy(max_size=4, max_delay=0.5)

    def test_empty_batch_waits_for_a_first_record(self):
        assert self.policy.time_left(0, None, now=10.0) is None

    def test_clock_starts_at_the_oldest_record(self):
        assert self.policy.time_left(1, oldest_at=10.0, now=10.0) == pytest.approx(0.5)
        assert self.policy.time_left(3, oldest_at=10.0, now=10.3) == pytest.approx(0.2)

    def test_due_when_oldest_has_waited_max_delay(self):
        assert self.policy.time_left(1, oldest_at=10.0, now=10.5) == 0.0
        assert self.policy.time_left(1, oldest_at=10.0, now=99.0) == 0.0

    def test_due_when_full(self):
        assert self.policy.time_left(4, oldest_at=10.0, now=10.0) == 0.0

    @pytest.mark.parametrize(("size", "delay"), [(0, 0.1), (-1, 0.1), (1, -0.1)])
    def test_rejects_nonsense(self, size, delay):
        with pytest.raises(ValueError):
            BatchPolicy(size, delay)


def run_agent(policy: BatchPolicy, feed) -> list[tuple[float, list[int]]]:
    """Run an agent batching with ``policy``; ``feed(put)`` sends values; return (age, batch)s."""
    app = faust.App(f"batching-test-{time.time_ns()}", store="memory://", Stream=BatchingStream)
    batches: list[tuple[float, list[int]]] = []
    sent_at: dict[int, float] = {}

    @app.agent()
    async def consume(stream):
        async for batch in stream.take_batches(policy):
            now = time.monotonic()
            values = [event.value for event in batch]
            # age: how long the batch's oldest record waited
            batches.append((now - min(sent_at[v] for v in values), values))

    async def main():
        async with consume.test_context() as agent:

            async def put(value: int) -> None:
                sent_at[value] = time.monotonic()
                await agent.put(value)

            await feed(put)

    asyncio.run(main())
    return batches


def test_full_batches_go_at_once():
    async def feed(put):
        for value in range(10):
            await put(value)
        await asyncio.sleep(0.4)

    batches = run_agent(BatchPolicy(max_size=4, max_delay=0.2), feed)
    assert [values for _, values in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batches[0][0] < 0.15  # full: sent without waiting for the delay
    assert batches[2][0] >= 0.2  # partial: sent when its oldest had waited the delay


def test_partial_batch_waits_for_its_oldest_record_not_a_fixed_tick():
    async def feed(put):
        await asyncio.sleep(0.25)  # idle time must not count towards the next batch
        await put(1)
        await asyncio.sleep(0.1)
        await put(2)
        await asyncio.sleep(0.5)

    batches = run_agent(BatchPolicy(max_size=100, max_delay=0.3), feed)
    assert [values for _, values in batches] == [[1, 2]]
    age = batches[0][0]
    assert 0.3 <= age < 0.45, age


def run_slow_agent(policy: BatchPolicy, feed, busy: float) -> list[tuple[float, float, list[int]]]:
    """As :func:`run_agent`, the agent taking ``busy`` seconds a batch; return
    (yielded at, done at, values) per batch, times from the start."""
    app = faust.App(f"batching-test-{time.time_ns()}", store="memory://", Stream=BatchingStream)
    batches: list[tuple[float, float, list[int]]] = []
    start = time.monotonic()

    @app.agent()
    async def consume(stream):
        async for batch in stream.take_batches(policy):
            got = time.monotonic() - start
            await asyncio.sleep(busy)
            batches.append((got, time.monotonic() - start, [event.value for event in batch]))

    async def main():
        async with consume.test_context() as agent:
            await feed(agent.put)

    asyncio.run(main())
    return batches


def test_records_arriving_during_a_batch_wait_in_the_next_one():
    # the next batch's clock runs while the caller is busy: once the first
    # batch is done the second is due at once, holding all that came meanwhile
    async def feed(put):
        await put(0)
        await asyncio.sleep(0.15)  # batch [0] goes at 0.1 and takes 0.4
        for value in range(1, 6):
            await put(value)
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)

    batches = run_slow_agent(BatchPolicy(max_size=100, max_delay=0.1), feed, busy=0.4)
    assert [values for _, _, values in batches] == [[0], [1, 2, 3, 4, 5]]
    (_, first_done, _), (second_at, _, _) = batches
    assert second_at - first_done < 0.05, (first_done, second_at)


def test_a_full_buffer_waits_while_the_caller_is_busy():
    # however fast records come, no batch exceeds max_size, none is lost or reordered
    async def feed(put):
        for value in range(11):
            await put(value)
        await asyncio.sleep(1.2)

    batches = run_slow_agent(BatchPolicy(max_size=3, max_delay=0.05), feed, busy=0.1)
    values = [values for _, _, values in batches]
    assert all(len(batch) <= 3 for batch in values), values
    assert [value for batch in values for value in batch] == list(range(11))
    assert values[:3] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
