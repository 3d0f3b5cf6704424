"""What a worker saw lately, for the dashboard: its latest images, its latest
dead letters and the stage timings of the last minute.

Reads: calls from the agents (an image classified, with its tensor and
whether it is held for review; a dead letter; an image counted, with its
stage timings). Writes: nothing; a
:meth:`Recent.snapshot` is served to the dashboard (views.py), which merges
every worker's. Bounded: a few dozen entries and one minute of timings, so
memory stays flat whatever the rate. Keys, reasons and texts are untrusted:
they go out as JSON strings, and the page shows them as text, never as HTML.
"""

from __future__ import annotations

import base64
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np

#: the latest images and dead letters a worker keeps
KEEP = 24
#: the window the stage percentiles are taken over (s)
WINDOW_S = 60.0
#: timings kept at most: a minute at ~300 images/s per worker
MAX_TIMINGS = 20_000


def thumbnail(tensor: np.ndarray) -> str:
    """A (28, 28) tensor in [0, 1] -> a PNG data URL (white ink on black, as the model sees it)."""
    pixels = np.clip(np.asarray(tensor, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    ok, png = cv2.imencode(".png", pixels)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise ValueError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii")


#: upper bounds of the timing histogram a worker sends (s): 0.5 ms to 60 s, ~20% apart
EDGES = np.geomspace(0.0005, 60.0, 64)


def histogram(values: Sequence[float]) -> list[int]:
    """Counts per bucket of :data:`EDGES` (one more for anything above the last)."""
    return np.bincount(np.searchsorted(EDGES, values), minlength=len(EDGES) + 1).tolist()


def quantile(counts: Sequence[int], q: float) -> float | None:
    """The ``q`` (0-1) quantile of a :func:`histogram`, read as the bucket's geometric
    middle (within ~10% of the true value); None for no values."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    running = 0
    for index, count in enumerate(counts):
        running += count
        if running >= rank and count:
            high = EDGES[min(index, len(EDGES) - 1)]
            low = EDGES[index - 1] if 0 < index < len(EDGES) else high / 1.2
            return float(np.sqrt(low * high))
    return float(EDGES[-1])  # pragma: no cover - the loop always reaches the rank


class Recent:
    """A worker's recent images, dead letters and timings."""

    def __init__(self, *, keep: int = KEEP, window: float = WINDOW_S, clock: Callable[[], float] = time.time) -> None:
        self.window, self.clock = window, clock
        # images keep their tensor; the thumbnail is made only when asked for
        self.images: deque[tuple[float, str, int, float | None, bool, np.ndarray]] = deque(maxlen=keep)
        self.dead_letters: deque[dict[str, Any]] = deque(maxlen=keep)
        self.timings: deque[tuple[float, Mapping[str, float]]] = deque(maxlen=MAX_TIMINGS)

    def image(self, path: str, digit: int, confidence: float | None, tensor: np.ndarray, *,
              review: bool = False) -> None:
        self.images.append((self.clock(), path, digit, confidence, review, tensor))

    def dead_letter(self, *, stage: str, kind: str, reason: str, path: str | None) -> None:
        self.dead_letters.append({"at": self.clock(), "stage": stage, "kind": kind, "reason": reason[:500],
                                  "object": path})

    def counted(self, timings: Mapping[str, float]) -> None:
        self.timings.append((self.clock(), timings))

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready: the latest images (newest first, with thumbnails), dead
        letters, and per stage a :func:`histogram` of the images counted in the window."""
        since = self.clock() - self.window
        values: dict[str, list[float]] = {}
        for at, timings in self.timings:
            if at >= since:
                for stage, seconds in timings.items():
                    values.setdefault(stage, []).append(seconds)
        stages = {stage: histogram(seconds) for stage, seconds in values.items()}
        return {
            "images": [{"at": at, "object": path, "digit": digit, "confidence": confidence, "review": review,
                        "thumbnail": thumbnail(t)}
                       for at, path, digit, confidence, review, t in reversed(self.images)],
            "dead_letters": list(reversed(self.dead_letters)),
            "stage_seconds": stages,
        }


def merge(snapshots: Iterable[Mapping[str, Any]], *, keep: int = KEEP) -> dict[str, Any]:
    """Several workers' snapshots -> one: the newest ``keep`` images and dead
    letters, and each stage's p50 / p99 over all the workers' timings."""
    images: list[dict[str, Any]] = []
    dead: list[dict[str, Any]] = []
    stages: dict[str, np.ndarray] = {}
    for snapshot in snapshots:
        images.extend(snapshot.get("images", []))
        dead.extend(snapshot.get("dead_letters", []))
        for stage, counts in snapshot.get("stage_seconds", {}).items():
            stages[stage] = stages.get(stage, 0) + np.asarray(counts, dtype=np.int64)
    images.sort(key=lambda item: item["at"], reverse=True)
    dead.sort(key=lambda item: item["at"], reverse=True)
    return {
        "images": images[:keep],
        "dead_letters": dead[:keep],
        "stages": {stage: {"p50": quantile(counts, 0.5), "p99": quantile(counts, 0.99), "count": int(counts.sum())}
                   for stage, counts in sorted(stages.items())},
    }
