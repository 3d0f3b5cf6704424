"""The Faust app: settings in, a configured ``faust.App`` with its clients out.

The app owns the worker's two long-lived clients, started before the agents
and stopped after them:

* ``app.storage``: the one aiobotocore S3 client;
* ``app.http``: the one aiohttp session, with the predictor client on it
  (and the requests for other workers' counts, :mod:`streamapp.pipeline.totals`).

:func:`create_app` builds the whole worker from settings: the app, its
topology (:class:`streamapp.pipeline.agents.Pipeline`: topics, tables, agents,
counters, as ``app.pipeline``) and its pages (:mod:`streamapp.pipeline.views`).
``app`` is that factory called once with the environment's settings: what
``faust -A streamapp worker`` loads. Building it connects to nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import aiohttp
import faust
from faust.types import TransportT
from mode import Service, ServiceT

from streamapp.imaging.tensor import use_one_thread
from streamapp.kafka import transport
from streamapp.pipeline.storage import Storage
from streamapp.serving.client import PredictorClient
from streamapp.settings import Settings

log = logging.getLogger(__name__)


class Http(Service):
    """Owns the worker's one aiohttp session and the predictor client on it."""

    def __init__(self, settings: Settings, **kwargs: object) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._client: PredictorClient | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        # one pool for the worker; a batch is one request, so a few
        # connections cover the inference agent's concurrency and the peers
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16))
        self._client = PredictorClient(
            self._session,
            base_url=self.settings.predictor_url,
            model_name=self.settings.model_name,
            protocol=self.settings.predictor_protocol,
            timeout=self.settings.predictor_timeout,
            binary=self.settings.predictor_binary,
        )
        log.info(
            "predictor client ready: %s model %r over %s",
            self.settings.predictor_url,
            self.settings.model_name,
            self.settings.predictor_protocol,
        )

    async def on_stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._session = self._client = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the HTTP session is not started")
        return self._session

    @property
    def predictor(self) -> PredictorClient:
        if self._client is None:
            raise RuntimeError("the predictor client is not started")
        return self._client


class StreamApp(faust.App):
    """A ``faust.App`` that starts its S3 and HTTP clients before its agents."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            settings.app_id,
            # Faust reads BROKER_URL, WEB_PORT, TOPIC_PARTITIONS ... from the
            # environment; these are defaults only.
            broker="kafka://localhost:9092",
            # every table: on disk, partitioned like the stream, counting its
            # values per partition (streamapp.kafka.store); the state lives under
            # APP_DATADIR, one per worker
            store="counting://",
            # Faust's table manager whose recovery restores in bulk first
            TableManager="streamapp.kafka.recovery:TableManager",
            origin="streamapp",
            # a short commit interval bounds what a rebalance replays
            # (measured: hundreds of duplicates at 2.8 s, tens at 0.5 s)
            broker_commit_interval=0.5,
            # a busy worker's produce requests a linger apart: a third as many
            # (streamapp.kafka.transport; docs/BENCHMARKS.md)
            producer_linger=0.03,
            # a poll hands the agents at most this many records, and the next
            # starts with other partitions (streamapp.kafka.transport): under a
            # burst the tensors and labeled records no longer wait behind the
            # whole backlog of events
            broker_max_poll_records=32,
            topic_partitions=8,
            web_port=6066,
            Stream="streamapp.kafka.streams:BatchingStream",
        )
        self.settings = settings
        self.pipeline: Any = None  # streamapp.pipeline.agents.Pipeline, set by create_app
        self.storage = Storage(settings)
        self.http = Http(settings)

    def _new_transport(self) -> TransportT:
        # kafka:// (and aiokafka://) gets Faust's aiokafka driver without its
        # rebalance faults (streamapp.kafka.transport); other schemes, such as the
        # embedded broker's tansu://, resolve as Faust resolves them
        urls = self.conf.broker_consumer
        if urls[0].scheme in ("kafka", "aiokafka"):
            return transport.Transport(urls, self)
        return super()._new_transport()

    async def on_start(self) -> None:
        use_one_thread()
        await super().on_start()

    def on_init_dependencies(self) -> Iterable[ServiceT]:
        # mode starts dependencies in order and stops them in reverse: the
        # clients are up before any agent runs and closed after the last one.
        return [self.storage, self.http, *super().on_init_dependencies()]


def create_app(settings: Settings) -> StreamApp:
    """A worker for ``settings``: the app with its pipeline and pages."""
    from streamapp.pipeline.agents import Pipeline  # they build on an app: imported once there is one
    from streamapp.pipeline.views import register_views

    app = StreamApp(settings)
    app.pipeline = Pipeline(app)
    register_views(app, app.pipeline)
    return app


app = create_app(Settings.from_env())
