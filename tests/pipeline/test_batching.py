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
