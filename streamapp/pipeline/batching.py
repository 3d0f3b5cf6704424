"""Batching of tensor records: when a batch goes to the predictor, pure.

A batch goes when it holds ``max_size`` records, or when its *oldest* record
has waited ``max_delay`` seconds. The stream that applies it is
:class:`streamapp.kafka.streams.BatchingStream`.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class BatchPolicy:
    max_size: int
    max_delay: float

    def __post_init__(self) -> None:
        if self.max_size < 1 or self.max_delay < 0:
            raise ValueError(f"invalid batch policy: {self}")

    def time_left(self, size: int, oldest_at: float | None, now: float) -> float | None:
        """Seconds until a batch of ``size`` must go: ``None`` while empty, 0 when due."""
        if size == 0 or oldest_at is None:
            return None
        if size >= self.max_size:
            return 0.0
        return max(0.0, oldest_at + self.max_delay - now)
