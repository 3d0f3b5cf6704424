"""Time the transform (``to_tensor`` alone) on the bench's samples and on each hard-photo category.

Reads: the bundled samples and :mod:`tools.hard_photos` (always this file's
own copy, so two trees are timed on the same photos). ``streamapp`` comes
from the working directory's tree, so an older commit can be timed beside
this one:

    git worktree add /tmp/before REV
    for tree in /tmp/before .; do (cd $tree && PYTHONPATH=. $OLDPWD/.venv/bin/python $OLDPWD/tools/transform_time.py); done

Writes: one JSON line, set -> [mean ms, p95 ms]. Run the trees in turn, more
than once: the machine's speed drifts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from importlib import resources
from pathlib import Path

import numpy as np

from streamapp.errors import ImageError
from streamapp.imaging.tensor import to_tensor, use_one_thread


def _hard_photos():
    spec = importlib.util.spec_from_file_location("hard_photos_here", Path(__file__).with_name("hard_photos.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timings(per_category: int, sample_rounds: int = 3) -> dict[str, list[float]]:
    use_one_thread()
    folder = resources.files("streamapp").joinpath("assets", "samples")
    sets = {"bench samples": [p.read_bytes() for p in sorted(folder.iterdir()) if p.name.endswith((".png", ".jpg"))]
            * sample_rounds}
    hard = _hard_photos()
    for category in hard.CATEGORIES:
        sets[category] = [photo.data for photo in hard.hard_set(category, per_category)]
    out = {}
    for name, images in sets.items():
        seconds = []
        for data in images:
            started = time.perf_counter()
            try:
                to_tensor(data)
            except ImageError:
                pass  # refused is timed too: the worker spends it as well
            seconds.append(time.perf_counter() - started)
        out[name] = [float(np.mean(seconds)) * 1000, float(np.percentile(seconds, 95)) * 1000]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-category", type=int, default=5, help="photos of each digit per category")
    print(json.dumps(timings(parser.parse_args().per_category)))


if __name__ == "__main__":
    main()
