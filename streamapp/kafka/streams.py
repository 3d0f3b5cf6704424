"""A Faust stream that batches by :class:`~streamapp.pipeline.batching.BatchPolicy`.

Reads: a Faust stream of events. Writes: lists of events, each list one
predictor request; the events are acked after the caller has processed the
batch. Faust's own ``take(max, within)`` restarts its timer after every batch
whether or not anything arrived, so at low rates it sends batches earlier and
smaller than the policy says; this keeps its buffering and acking and changes
only the clock. It is built from ``Stream.take``'s private parts
(``_tracks_buffer_agen``, ``_enable_passive``, ``_processors``), hence its
place here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any, cast

import faust
from faust.streams import _tracks_buffer_agen
from faust.types import ChannelT, EventT
from mode.utils.futures import notify

from streamapp.pipeline.batching import BatchPolicy


class BatchingStream(faust.Stream):
    """A ``faust.Stream`` that can also batch by :class:`BatchPolicy`."""

    @_tracks_buffer_agen
    async def take_batches(self, policy: BatchPolicy) -> AsyncGenerator[list[EventT], None]:
        events: list[EventT] = []
        oldest_at: float | None = None
        first = asyncio.Event()  # the buffer got its first record
        full = asyncio.Event()  # the buffer holds max_size records
        consumed = asyncio.Event()  # the caller is done with a full batch
        consuming: asyncio.Future | None = None
        stream_enable_acks = self.enable_acks

        async def add_to_buffer(value: Any) -> Any:
            nonlocal consuming, oldest_at
            arrived_at = time.monotonic()
            try:
                if consuming is not None:  # a batch is being processed: wait for it
                    try:
                        await consuming
                    finally:
                        consuming = None
                event = self.current_event
                if event is None:
                    raise RuntimeError("batch buffer found current_event is None")
                if not events:
                    oldest_at = arrived_at
                    first.set()
                events.append(event)
                if len(events) >= policy.max_size:
                    full.set()
                    consumed.clear()
                    await self.wait(consumed)  # never more than max_size in a batch
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.exception("Error adding to batch buffer: %r", exc)
                await self.crash(exc)
            return value

        # the events are acked here, after the caller has processed the batch
        self.enable_acks = False
        self.add_processor(add_to_buffer)
        self._enable_passive(cast(ChannelT, aiter(self.channel)))
        try:
            while not self.should_stop:
                # mode reports a timeout like a stop, so the loop condition,
                # not wait_for_stopped's result, decides whether to go on
                left = policy.time_left(len(events), oldest_at, time.monotonic())
                if left is None:
                    await self.wait_for_stopped(first)
                    continue
                if left > 0:
                    await self.wait_for_stopped(full, timeout=left)
                    continue
                consuming = self.loop.create_future()
                batch = list(events)
                try:
                    yield batch
                finally:
                    events.clear()
                    oldest_at = None
                    first.clear()
                    full.clear()
                    for event in batch:
                        await self.ack(event)
                    notify(consuming)
                    consumed.set()
        finally:
            self.enable_acks = stream_enable_acks
            self._processors.remove(add_to_buffer)
