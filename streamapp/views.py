"""Web pages of a worker: the counts as JSON, stats, and a live dashboard.

Reads: the ``images`` and ``dead-letters`` global tables (every partition, on
every worker) and this worker's own stats. Writes: HTTP responses.

    GET /           the dashboard (HTML; polls /digits/ and /stats/ each second)
    GET /digits/    {"0": n0, ..., "9": n9}: images counted per digit, all partitions
    GET /stats/     totals and this worker's counters

Faust serves pages before a new worker has its first partitions and has
recovered its tables; until then the counts would read zero, so the count
pages answer 503 and readiness probes wait.
"""

from __future__ import annotations

import time
from importlib import resources

from faust.web import Request, Response, View

from streamapp.agents import dead_letter_counts, digit_counts, images, stats
from streamapp.app import app, settings

_STARTED = time.time()


@app.page("/")
class Dashboard(View):
    async def get(self, request: Request) -> Response:
        html = resources.files("streamapp").joinpath("dashboard.html").read_text(encoding="utf-8")
        return self.html(html)


def recovering(view: View) -> Response | None:
    """A 503 answer while the tables are not yet recovered, else None."""
    if app.tables.recovery.completed.is_set():
        return None
    return view.json({"error": "the worker is recovering its tables; retry shortly"}, status=503)


@app.page("/digits/")
class Digits(View):
    async def get(self, request: Request) -> Response:
        return recovering(self) or self.json(digit_counts())


@app.page("/stats/")
class Stats(View):
    async def get(self, request: Request) -> Response:
        if (busy := recovering(self)) is not None:
            return busy
        dead = dead_letter_counts()
        return self.json(
            {
                "images": len(images),
                "dead_letters": sum(dead.values()),
                "dead_letters_by_kind": dead,
                "worker": {
                    "id": app.conf.id,
                    "url": str(app.conf.canonical_url),
                    "uptime": round(time.time() - _STARTED, 1),
                    "counters": dict(sorted(stats.items())),
                },
                "settings": {
                    "predictor": f"{settings.predictor_url} ({settings.predictor_protocol}, model {settings.model_name})",
                    "transform": settings.transform,
                    "batch": f"{settings.batch_max_size} / {settings.batch_max_delay * 1000:.0f} ms",
                    "archive": f"s3://{settings.archive_bucket}/{settings.archive_prefix}<digit>/<key>",
                },
            }
        )
