"""Web pages of a worker: the counts as JSON, stats, and a live dashboard.

Reads: the ``images`` and ``dead-letters`` tables' counts over every
partition (:mod:`streamapp.pipeline.totals`: this worker's own partitions, the other
workers' over HTTP) and this worker's own stats. Writes: HTTP responses.

    GET /           the dashboard (HTML; polls /digits/ and /stats/ each second)
    GET /digits/    {"0": n0, ..., "9": n9}: images counted per digit, all partitions
                    (not those held for review)
    GET /stats/     totals (with "review": {"0": r0, ..., "9": r9}, the images held
                    for review per digit guessed) and this worker's counters
    GET /metrics    this worker's Prometheus metrics (streamapp.pipeline.metrics)
    GET /api/dashboard/
                    every worker's latest images (thumbnails, digit, confidence),
                    latest dead letters, stage p50 / p99 over the last minute,
                    and which worker holds which partitions
    GET /internal/recent/
                    this worker's part of that, for its peers
    GET /internal/counts/<table>/?partitions=0,1[&replica=standby]
                    this worker's partitions' counts, for its peers

Until every partition can be read (a worker still recovering, the owner of a
partition dead and no standby replica here) the count pages answer 503
rather than a short count, and readiness probes wait.
"""

from __future__ import annotations

import asyncio
import time
from importlib import resources

from faust.types import AppT
from faust.web import Request, Response, View

from streamapp.pipeline.agents import Pipeline
from streamapp.pipeline.metrics import CONTENT_TYPE
from streamapp.pipeline.recent import WINDOW_S, merge
from streamapp.pipeline.state import split_digits
from streamapp.pipeline.totals import (
    Totals,
    cluster_totals,
    encode_partition_counts,
    local_counts,
    members,
    peer_json,
    this_worker,
)

#: the internal page a worker serves its recent data on, for its peers' dashboards
RECENT_PATH = "/internal/recent/"


def unavailable(view: View, **totals: Totals) -> Response | None:
    """A 503 answer while some partition's counts cannot be read, else None."""
    missing = {name: total.missing for name, total in totals.items() if total.missing}
    if not missing:
        return None
    return view.json({"error": "counts of some partitions cannot be read yet (a worker is recovering or "
                               "rebalancing); retry shortly", "missing_partitions": missing}, status=503)


def register_views(app: AppT, pipeline: Pipeline) -> None:
    """The worker's pages on ``app``, reading ``pipeline``'s tables and counters."""
    settings = pipeline.settings
    started = time.time()

    @app.page("/")
    class Dashboard(View):
        async def get(self, request: Request) -> Response:
            html = resources.files("streamapp.pipeline").joinpath("dashboard.html").read_text(encoding="utf-8")
            return self.html(html)

    @app.page("/digits/")
    class Digits(View):
        async def get(self, request: Request) -> Response:
            totals = await cluster_totals(app, pipeline.images, app.http.session)
            if (busy := unavailable(self, images=totals)) is not None:
                return busy
            # the same shape as ever, so clients that read every key as a digit
            # keep working; the review counts are on /stats/
            digits, _review = split_digits(totals.counts)
            return self.json(digits)

    @app.page("/stats/")
    class Stats(View):
        async def get(self, request: Request) -> Response:
            counted, dead = await asyncio.gather(
                cluster_totals(app, pipeline.images, app.http.session),
                cluster_totals(app, pipeline.dead_letters, app.http.session),
            )
            if (busy := unavailable(self, images=counted, dead_letters=dead)) is not None:
                return busy
            digits, review = split_digits(counted.counts)
            return self.json(
                {
                    # images counted under their digit (the sum of /digits/), and apart
                    # from them the images held for review, per digit guessed
                    "images": sum(digits.values()),
                    "review_images": sum(review.values()),
                    "review": review,
                    "review_below": settings.review_below,
                    "dead_letters": sum(dead.counts.values()),
                    "dead_letters_by_kind": dict(dead.counts),
                    "worker": {
                        "id": app.conf.id,
                        "url": str(app.conf.canonical_url),
                        "uptime": round(time.time() - started, 1),
                        "counters": dict(sorted(pipeline.stats.items())),
                        "partitions": {str(p): source for p, source in sorted(counted.sources.items())},
                    },
                    "settings": {
                        "predictor": f"{settings.predictor_url} ({settings.predictor_protocol}, model {settings.model_name})",
                        "transform": settings.transform,
                        "batch": f"{settings.batch_max_size} / {settings.batch_max_delay * 1000:.0f} ms",
                        "archive": f"s3://{settings.archive_bucket}/{settings.archive_prefix}<digit>/<key>",
                        "review": "off" if settings.review_below is None else
                                  f"top probability below {settings.review_below:g} (or none): "
                                  f"s3://{settings.archive_bucket}/{settings.review_prefix}<digit>/<key>",
                    },
                }
            )

    @app.page("/metrics")
    class PrometheusMetrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(pipeline.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    @app.page("/api/dashboard/")
    class DashboardData(View):
        async def get(self, request: Request) -> Response:
            me = this_worker(app)
            held = members(app, pipeline.images)
            peers = [url for url in held if url != me]
            answers = await asyncio.gather(*(peer_json(app.http.session, url + RECENT_PATH, timeout=2.0)
                                             for url in peers))
            snapshots = {me: pipeline.recent.snapshot(), **dict(zip(peers, answers, strict=True))}
            workers = [{"url": url, "answered": snapshots[url] is not None, "partitions": held[url]}
                       for url in sorted(held)]
            merged = merge(snapshot for snapshot in snapshots.values() if snapshot is not None)
            return self.json({**merged, "workers": workers, "window_s": WINDOW_S})

    @app.page(RECENT_PATH)
    class RecentData(View):
        async def get(self, request: Request) -> Response:
            return self.json(pipeline.recent.snapshot())

    @app.page("/internal/counts/{table}/")
    class PartitionCounts(View):
        async def get(self, request: Request, table: str) -> Response:
            tables = {t.name: t for t in (pipeline.images, pipeline.dead_letters)}
            if table not in tables:
                return self.json({"error": "no such table"}, status=404)
            try:
                wanted = [int(p) for p in request.query.get("partitions", "").split(",") if p]
            except ValueError:
                return self.json({"error": "partitions: a comma-separated list of numbers"}, status=400)
            replica = request.query.get("replica", "active")
            if replica not in ("active", "standby"):
                return self.json({"error": "replica: 'active' or 'standby'"}, status=400)
            counts = local_counts(app, tables[table], wanted, standby=replica == "standby")
            return self.json({"partitions": encode_partition_counts(counts)})
