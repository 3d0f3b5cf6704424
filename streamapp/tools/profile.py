"""Where a process's CPU goes, by component: py-spy samples, summed.

Reads: py-spy's ``raw`` output (one line per distinct stack: frames from the
thread's root to the innermost, ``;``-separated, then a sample count). Writes:
nothing; :func:`components` returns each component's share of the busy
samples. :class:`Sampler` runs py-spy (https://github.com/benfred/py-spy) on
running processes; ``streamapp bench --profile DIR`` uses both on the workers
during the throughput phase.

A sample is given to the most specific component anywhere on its stack, so
aiohttp under aiobotocore counts as S3, JSON under Faust's serializers as
records, and only what no library claims is the event loop's own.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

#: (component, pattern on a frame's file), most specific first
COMPONENTS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("s3 client (aiobotocore)", r"[(/](aiobotocore|botocore)/|pipeline/storage\.py"),
        ("transform (imaging)", r"streamapp/imaging/|[(/]cv2/"),
        ("predictor client", r"streamapp/serving/"),
        ("records (Faust models, JSON)", r"[(/]faust/models/|[(/]faust/serializers/|pipeline/records\.py|[(/]json/"),
        ("kafka client (aiokafka)", r"[(/]aiokafka/"),
        ("tables (Faust, RocksDB)", r"[(/]faust/tables/|[(/]faust/stores/|streamapp/kafka/store\.py|[(/]rocksdict/"),
        ("faust streams, topics, consumer", r"[(/]faust/|[(/]mode/|streamapp/kafka/"),
        ("agents (pipeline code)", r"streamapp/pipeline/"),
        ("http (aiohttp)", r"[(/](aiohttp|yarl|multidict)/"),
    )
)

#: innermost frames of a thread that waits for work: not CPU, whatever py-spy says
_WAITING = re.compile(r"^(_worker \(.*concurrent/futures/thread\.py|\w*Selector\.select \(|wait \(.*threading\.py)")

#: where a callback or a thread pool job begins (asyncio's own loop; uvloop's
#: is native, so under it a coroutine's frames follow the runner's directly)
_DISPATCH = re.compile(r"^(Handle\._run \(.*asyncio/events\.py|_WorkItem\.run \(.*concurrent/futures/thread\.py)")
_ROOT = re.compile(r"^(_run_module_as_main|Thread\._bootstrap|<module>) \(")

#: the frames that start a process or a thread and run its loop: not work
_RUNNER = re.compile(
    r"\((<frozen runpy>|[^)]*(click/|faust/cli/|faust/__main__\.py|mode/worker\.py|threading\.py|asyncio/runners\.py"
    r"|asyncio/base_events\.py|mode/threads\.py:(62|211)\)))"
)

EVENT_LOOP = "event loop, sockets, other"


def parse_raw(text: str) -> list[tuple[list[str], int]]:
    """py-spy raw lines -> (frames root first, samples); blank or malformed lines are skipped."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def _work(frames: Sequence[str]) -> Sequence[str]:
    """The frames of the work itself: below the event loop's or thread pool's dispatch.

    Every stack of a Faust worker starts in Faust's command line and mode's
    worker (or a thread's bootstrap), which would otherwise claim it all:
    those runner frames are dropped, and a stack of nothing else is the
    loop's own work. A stack py-spy could only read in part (no root) is
    taken whole.
    """
    for index, frame in enumerate(frames):
        if _DISPATCH.match(frame):
            return frames[index + 1:]
    if not frames or not _ROOT.match(frames[0]):
        return frames
    index = 0
    while index < len(frames) and _RUNNER.search(frames[index]):
        index += 1
    return frames[index:]


def component_of(frames: Sequence[str]) -> str | None:
    """The component a stack's sample belongs to; ``None`` for a thread waiting for work."""
    if frames and _WAITING.match(frames[-1]):
        return None
    work = _work(frames)
    for name, pattern in COMPONENTS:
        if any(pattern.search(frame) for frame in work):
            return name
    return EVENT_LOOP


def components(stacks: Iterable[tuple[Sequence[str], int]]) -> dict[str, float]:
    """Each component's share (0-1) of the busy samples, largest first; ``{}`` for none."""
    busy: Counter[str] = Counter()
    for frames, count in stacks:
        name = component_of(frames)
        if name is not None:
            busy[name] += count
    total = sum(busy.values())
    return {name: count / total for name, count in busy.most_common()} if total else {}


class Sampler:
    """py-spy on each process while the block runs; its raw output in ``folder``."""

    def __init__(self, pids: dict[str, int], folder: Path, *, rate: int = 100) -> None:
        self.pids, self.folder, self.rate = pids, folder, rate
        self.procs: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> Sampler:
        beside = Path(sys.executable).parent / "py-spy"  # a venv's, when its bin is not on PATH
        exe = str(beside) if beside.exists() else shutil.which("py-spy")
        if exe is None:
            raise RuntimeError("py-spy is not installed: pip install py-spy (it is in the test extras)")
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            self.procs[name] = subprocess.Popen(  # noqa: S603 (our own processes)
                [exe, "record", "--pid", str(pid), "--rate", str(self.rate), "--format", "raw",
                 "--output", str(self.path(name)), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
        return self

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.txt"

    def __exit__(self, *exc: object) -> None:
        # py-spy writes its output when interrupted
        for proc in self.procs.values():
            proc.send_signal(signal.SIGINT)
        for name, proc in self.procs.items():
            _, err = proc.communicate(timeout=30)
            if not self.path(name).exists():
                raise RuntimeError(f"py-spy on {name} wrote nothing: {err.decode(errors='replace')[-500:]}")

    def shares(self) -> dict[str, dict[str, float]]:
        return {name: components(parse_raw(self.path(name).read_text())) for name in self.procs}
