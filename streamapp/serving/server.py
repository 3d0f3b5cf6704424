"""The model server: KServe v1 and Open Inference Protocol v2 over HTTP.

Reads: JSON inference requests, a batch of 28x28 tensors each (float32 in
[0, 1], as :mod:`streamapp.imaging.tensor` makes them), for the one
:class:`streamapp.serving.model.DigitModel` it serves.
Writes: JSON answers: per image the digit and the ten class probabilities.

Routes (``<name>`` is the model's name, ``mnist`` by default):

* KServe v1: ``POST /v1/models/<name>:predict`` with ``{"instances": [...]}``
  -> ``{"predictions": [{"classes": 7, "predictions": [10 floats]}, ...]}``,
  the shape of the KServe sample's TensorFlow MNIST predictor;
  ``GET /v1/models/<name>`` (readiness) and ``GET /v1/models`` (list).
* Open Inference Protocol v2 (REST): ``POST /v2/models/<name>[/versions/<v>]/infer``
  with one FP32 input ``[B, 784]`` or ``[B, 28, 28]`` -> outputs ``digit``
  (INT64 ``[B]``) and ``probabilities`` (FP32 ``[B, 10]``);
  the input as JSON numbers or, with the binary tensor data extension
  (``Inference-Header-Content-Length``), as raw FP32/FP64 bytes after the
  JSON; ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``,
  ``/v2/models/<name>[/versions/<v>]`` and ``.../ready``.
* ``GET /metrics``: Prometheus metrics (requests by protocol and status,
  request seconds, batch sizes).

Every request of B images costs one forward pass, run in a worker thread so
the event loop keeps answering health checks while the model computes. Bad
input gets HTTP 400 (413 for a body over the byte limit) with
``{"error": "..."}`` saying what is wrong; an unknown model or route gets 404.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

import numpy as np
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from streamapp.errors import InvalidTensor
from streamapp.serving.protocol import (
    BINARY_HEADER,
    InvalidInput,
    model_metadata,
    parse_json,
    paths,
    read_binary_body,
    v1_batch,
    v1_response,
    v2_batch,
    v2_response,
)

log = logging.getLogger(__name__)

#: default limits; a request past either is refused before any model work
MAX_BATCH = 256
MAX_BODY_BYTES = 8 * 1024 * 1024  # a batch of 256 as JSON text is about 2-4 MB
_MODEL = web.AppKey("model", Any)
_LIMITS = web.AppKey("limits", dict)
_EXECUTOR = web.AppKey("executor", Any)
_METRICS = web.AppKey("metrics", Any)


class ServerMetrics:
    """The model server's Prometheus metrics (KServe's convention: ``GET /metrics`` on the HTTP port)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("streamapp_predictor_requests", "Inference requests answered, by protocol "
                                "(v1, v2) and HTTP status code.", ["protocol", "code"], registry=registry)
        self.seconds = Histogram("streamapp_predictor_request_seconds", "Seconds to answer an inference request.",
                                 ["protocol"], registry=registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
        self.batch_size = Histogram("streamapp_predictor_batch_size", "Images per forward pass.", registry=registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))


class ModelNotFound(LookupError):
    """The URL names a model (or version) this server does not serve: HTTP 404."""


# -- handlers ----------------------------------------------------------------------


def _model(request: web.Request) -> Any:
    model = request.app[_MODEL]
    if request.match_info["name"] != model.name:
        raise ModelNotFound(f"model {request.match_info['name']!r} is not served here (only {model.name!r})")
    version = request.match_info.get("version")
    if version is not None and version != model.version:
        raise ModelNotFound(f"model {model.name!r} has no version {version!r} (only {model.version!r})")
    return model


async def _read_json(request: web.Request) -> Any:
    # read() enforces the app's client_max_size and raises 413 past it
    return parse_json(await request.read())


async def _forward(request: web.Request, batch: np.ndarray) -> np.ndarray:
    """One forward pass for the whole batch, in the executor unless there is none."""
    model = request.app[_MODEL]
    executor = request.app[_EXECUTOR]
    request.app[_METRICS].batch_size.observe(len(batch))
    started = time.perf_counter()
    try:
        if executor is None:
            proba = model.predict_proba(batch)
        else:
            proba = await asyncio.get_running_loop().run_in_executor(executor, model.predict_proba, batch)
    except InvalidTensor as exc:  # the model's own check; ours should have caught it first
        raise InvalidInput(str(exc)) from None
    log.debug("forward pass: %d images in %.1f ms", len(batch), (time.perf_counter() - started) * 1e3)
    return np.asarray(proba, dtype=np.float32)


async def v1_predict(request: web.Request) -> web.Response:
    _model(request)
    batch = v1_batch(await _read_json(request), request.app[_LIMITS]["max_batch"])
    return web.json_response(v1_response(await _forward(request, batch)))


async def v1_model_ready(request: web.Request) -> web.Response:
    model = _model(request)
    return web.json_response({"name": model.name, "ready": True})


async def v1_models(request: web.Request) -> web.Response:
    return web.json_response({"models": [request.app[_MODEL].name]})


async def v2_infer(request: web.Request) -> web.Response:
    model = _model(request)
    header_length = request.headers.get(BINARY_HEADER)
    if header_length is None:
        body = await _read_json(request)
    else:  # the binary tensor data extension: the input's bytes follow the JSON
        body = read_binary_body(await request.read(), header_length, "inputs", error=InvalidInput)
    batch, names = v2_batch(body, request.app[_LIMITS]["max_batch"])
    request_id = body.get("id")
    if request_id is None:
        request_id = str(uuid.uuid4())
    elif not isinstance(request_id, str):
        raise InvalidInput('"id" must be a string')
    proba = await _forward(request, batch)
    return web.json_response(v2_response(model, proba, names, request_id))


async def v2_model_metadata(request: web.Request) -> web.Response:
    return web.json_response(model_metadata(_model(request)))


async def v2_model_ready(request: web.Request) -> web.Response:
    model = _model(request)
    return web.json_response({"name": model.name, "ready": True})


async def v2_server_metadata(request: web.Request) -> web.Response:
    return web.json_response({"name": "streamapp-modelserver", "version": _version(), "extensions": ["binary_tensor_data"]})


async def v2_live(request: web.Request) -> web.Response:
    return web.json_response({"live": True})


async def v2_ready(request: web.Request) -> web.Response:
    # the model is loaded before the app is built, so a listening server is ready
    return web.json_response({"ready": True})


def _version() -> str:
    try:
        return metadata.version("streamapp")
    except metadata.PackageNotFoundError:
        return "unknown"


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(request.app[_METRICS].registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


# -- errors mapped at the edge --------------------------------------------------


@web.middleware
async def _measure(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Count and time the inference routes (after _errors has turned every failure into an answer)."""
    protocol = "v1" if request.path.endswith(":predict") else "v2" if request.path.endswith("/infer") else None
    if protocol is None or request.method != "POST":
        return await handler(request)
    started = time.perf_counter()
    response = await handler(request)
    measured = request.app[_METRICS]
    measured.requests.labels(protocol, str(response.status)).inc()
    measured.seconds.labels(protocol).observe(time.perf_counter() - started)
    return response


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        return await handler(request)
    except InvalidInput as exc:
        log.info("400 %s %s: %s", request.method, request.path, exc)
        return web.json_response({"error": str(exc)}, status=400)
    except ModelNotFound as exc:
        return web.json_response({"error": str(exc)}, status=404)
    except web.HTTPRequestEntityTooLarge as exc:
        limit = request.app[_LIMITS]["max_body_bytes"]
        log.info("413 %s %s: body over %d bytes", request.method, request.path, limit)
        return web.json_response({"error": f"body is larger than the limit of {limit} bytes"}, status=exc.status)
    except web.HTTPException as exc:  # 404 / 405 from the router, as JSON like the rest
        if exc.status < 400:
            raise
        return web.json_response({"error": exc.reason}, status=exc.status, headers=_allow(exc))
    except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
        raise
    except Exception:  # a bug, not bad input: log it and answer 500, never crash the server
        log.exception("unhandled error in %s %s", request.method, request.path)
        return web.json_response({"error": "internal server error"}, status=500)


def _allow(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}


# -- fault injection -----------------------------------------------------------


class FailingOn:
    """A model that raises for every batch holding an image whose pixels all equal
    ``value``: an input the server fails on (500) while it answers every other,
    for testing what the pipeline does with one."""

    def __init__(self, model: Any, value: float) -> None:
        self.model, self.value = model, value
        self.name, self.version = model.name, model.version

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        flat = batch.reshape(len(batch), -1)
        if (flat == np.float32(self.value)).all(axis=1).any():
            raise RuntimeError(f"injected fault: an image of all {self.value!r}")
        return self.model.predict_proba(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


# -- the app --------------------------------------------------------------------


async def create_app(
    model: Any,
    *,
    max_batch: int = MAX_BATCH,
    max_body_bytes: int = MAX_BODY_BYTES,
    use_executor: bool = True,
) -> web.Application:
    """An app serving ``model`` (anything with ``name``, ``version`` and ``predict_proba``)."""
    app = web.Application(middlewares=[_measure, _errors], client_max_size=max_body_bytes)
    app[_METRICS] = ServerMetrics()
    app[_MODEL] = model
    app[_LIMITS] = {"max_batch": max_batch, "max_body_bytes": max_body_bytes}
    app[_EXECUTOR] = None

    async def executor_ctx(app: web.Application) -> Any:
        # one thread: numpy's BLAS already uses the cores, and a queue of one keeps
        # batches from competing for them. Measured on 2 busy cores: within noise
        # of running inline for batches of 8-128, 10-25% slower for single images;
        # in exchange health checks are answered during a 0.3-1 s forward pass
        if use_executor:
            app[_EXECUTOR] = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="forward")
        yield
        if app[_EXECUTOR] is not None:
            app[_EXECUTOR].shutdown(wait=True)

    app.cleanup_ctx.append(executor_ctx)
    name = "{name:[^/:]+}"  # no colon: "<name>:predict" must not match the readiness route
    version = "{version}"
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/models", v1_models)
    v1 = paths("v1", name)
    app.router.add_get(v1["ready"], v1_model_ready)
    app.router.add_post(v1["predict"], v1_predict)
    app.router.add_get("/v2", v2_server_metadata)
    app.router.add_get("/v2/health/live", v2_live)
    app.router.add_get("/v2/health/ready", v2_ready)
    for served in (name, f"{name}/versions/{version}"):
        v2 = paths("v2", served)
        app.router.add_get(f"/v2/models/{served}", v2_model_metadata)
        app.router.add_get(v2["ready"], v2_model_ready)
        app.router.add_post(v2["predict"], v2_infer)
    return app


def main(argv: list[str] | None = None) -> None:
    """``streamapp predictor``: load the model and serve it until SIGTERM / SIGINT."""
    parser = argparse.ArgumentParser(prog="streamapp predictor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")  # noqa: S104 (a server)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--model-name", default="mnist", help="name in the URLs (default: mnist)")
    parser.add_argument("--model-path", default=None, help="weights file (default: the bundled model)")
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH, help="images per request, at most")
    parser.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES, help="request body size, at most")
    parser.add_argument("--no-executor", action="store_true", help="run the forward pass on the event loop")
    parser.add_argument("--fail-on-value", type=float, default=None, metavar="V",
                        help="fault injection, for tests: fail (HTTP 500) every batch holding an image whose "
                             "pixels all equal V")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from streamapp.serving.model import DigitModel  # imported here: the CLI's other commands do not need it

    model = DigitModel.load(args.model_path, name=args.model_name)
    if args.fail_on_value is not None:
        log.warning("fault injection: batches holding an image of all %r fail with HTTP 500", args.fail_on_value)
        model = FailingOn(model, args.fail_on_value)
    app = create_app(
        model, max_batch=args.max_batch, max_body_bytes=args.max_body_bytes, use_executor=not args.no_executor
    )
    log.info("serving model %s version %s on %s:%d", model.name, model.version, args.host, args.port)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)
