"""The model server: KServe v1 and Open Inference Protocol v2 over HTTP.

Reads: JSON inference requests, a batch of 28x28 tensors each (float32 in
[0, 1], as :mod:`streamapp.transform` makes them), for the one
:class:`streamapp.model.DigitModel` it serves.
Writes: JSON answers: per image the digit and the ten class probabilities.

Routes (``<name>`` is the model's name, ``mnist`` by default):

* KServe v1: ``POST /v1/models/<name>:predict`` with ``{"instances": [...]}``
  -> ``{"predictions": [{"classes": 7, "predictions": [10 floats]}, ...]}``,
  the shape of the KServe sample's TensorFlow MNIST predictor;
  ``GET /v1/models/<name>`` (readiness) and ``GET /v1/models`` (list).
* Open Inference Protocol v2 (REST): ``POST /v2/models/<name>[/versions/<v>]/infer``
  with one FP32 input ``[B, 784]`` or ``[B, 28, 28]`` -> outputs ``digit``
  (INT64 ``[B]``) and ``probabilities`` (FP32 ``[B, 10]``);
  ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``,
  ``/v2/models/<name>[/versions/<v>]`` and ``.../ready``.

Every request of B images costs one forward pass, run in a worker thread so
the event loop keeps answering health checks while the model computes. Bad
input gets HTTP 400 (413 for a body over the byte limit) with
``{"error": "..."}`` saying what is wrong; an unknown model or route gets 404.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

import numpy as np
from aiohttp import web

from streamapp.errors import InvalidTensor

log = logging.getLogger(__name__)

#: default limits; a request past either is refused before any model work
MAX_BATCH = 256
MAX_BODY_BYTES = 8 * 1024 * 1024  # a batch of 256 as JSON text is about 2-4 MB

INPUT_NAME = "image"
DIGIT_OUTPUT = "digit"
PROBA_OUTPUT = "probabilities"
_V2_INPUT_TYPES = ("FP32", "FP64")  # JSON carries no precision; FP64 clients are fine

_MODEL = web.AppKey("model", Any)
_LIMITS = web.AppKey("limits", dict)
_EXECUTOR = web.AppKey("executor", Any)


class InvalidInput(ValueError):
    """The request is unusable as sent: answered with HTTP 400 and the reason."""


class ModelNotFound(LookupError):
    """The URL names a model (or version) this server does not serve: HTTP 404."""


# -- request bodies -> a (B, 28, 28) float32 batch -------------------------------


def _reject_constant(token: str) -> float:
    # Python's json accepts NaN/Infinity, which are not JSON; refuse them by name
    raise InvalidInput(f"{token} is not a valid JSON number")


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except InvalidInput:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and bad UTF-8 are ValueErrors
        raise InvalidInput(f"body is not valid JSON: {exc}") from None


def to_batch(values: Any, *, where: str, max_batch: int, shape: list[int] | None = None) -> np.ndarray:
    """Nested lists of numbers -> a (B, 28, 28) float32 batch, or ``InvalidInput``.

    ``shape`` (v2) is the declared tensor shape; ``values`` may then be flat
    or nested as the spec allows. Without it (v1) each item of ``values`` is
    one image: 784 numbers or 28 rows of 28.
    """
    try:
        # no dtype here: strings, booleans, nulls and ragged lists must fail, not convert
        array = np.asarray(values)
    except (ValueError, TypeError):
        raise InvalidInput(f"{where} is ragged: every image needs the same shape") from None
    if array.dtype.kind not in "iuf":
        raise InvalidInput(f"{where} must hold only numbers (got {_kind_name(array)})")
    if shape is not None:
        if array.size != math.prod(shape):
            raise InvalidInput(f"{where} holds {array.size} values but shape {shape} needs {math.prod(shape)}")
        if array.ndim != 1 and list(array.shape) != shape:
            raise InvalidInput(f"{where} is nested as {list(array.shape)}, not as its shape {shape}")
        array = array.reshape(shape)
    if array.ndim == 2 and array.shape[1] == 784:
        batch_size = array.shape[0]
    elif array.ndim == 3 and array.shape[1:] == (28, 28):
        batch_size = array.shape[0]
    else:
        raise InvalidInput(f"{where} has shape {list(array.shape)}, expected [B, 784] or [B, 28, 28]")
    if batch_size == 0:
        raise InvalidInput(f"{where} holds no images")
    if batch_size > max_batch:
        raise InvalidInput(f"{where} holds {batch_size} images, more than the limit of {max_batch}")
    with np.errstate(over="ignore"):  # past float32's range becomes inf, refused just below
        batch = array.astype(np.float32).reshape(batch_size, 28, 28)
    if not np.isfinite(batch).all():  # e.g. 1e999, which JSON parses as infinity
        raise InvalidInput(f"{where} holds a value that is not a finite float32")
    low, high = float(batch.min()), float(batch.max())
    if low < 0.0 or high > 1.0:
        hint = " (divide 0-255 pixels by 255)" if high > 1.0 else ""
        raise InvalidInput(f"{where} values must lie in [0, 1], found [{low:g}, {high:g}]{hint}")
    return batch


def _kind_name(array: np.ndarray) -> str:
    return {"b": "booleans", "U": "strings", "S": "strings", "O": "mixed or non-numeric values"}.get(
        array.dtype.kind, str(array.dtype)
    )


def v1_batch(body: Any, max_batch: int) -> np.ndarray:
    if not isinstance(body, dict) or "instances" not in body:
        raise InvalidInput('v1 body must be a JSON object with "instances"')
    instances = body["instances"]
    if not isinstance(instances, list):
        raise InvalidInput('"instances" must be a list of images')
    if len(instances) > max_batch:  # before converting any of them
        raise InvalidInput(f'"instances" holds {len(instances)} images, more than the limit of {max_batch}')
    return to_batch(instances, where='"instances"', max_batch=max_batch)


def v2_batch(body: Any, max_batch: int) -> tuple[np.ndarray, list[str]]:
    """The one input of a v2 request -> (batch, requested output names)."""
    if not isinstance(body, dict):
        raise InvalidInput("v2 body must be a JSON object")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InvalidInput('"inputs" must be a list of exactly one tensor')
    tensor = inputs[0]
    # the name is not checked, as MLServer and KServe's custom models do not check it
    missing = [key for key in ("name", "shape", "datatype", "data") if key not in tensor]
    if missing:
        raise InvalidInput(f"input tensor lacks {', '.join(missing)}")
    shape, datatype = tensor["shape"], tensor["datatype"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInput(f"input shape must be a list of non-negative integers, got {shape!r}")
    if datatype not in _V2_INPUT_TYPES:
        raise InvalidInput(f"input datatype {datatype!r} is not supported: send FP32")
    if shape and shape[0] > max_batch:  # before touching the data
        raise InvalidInput(f"input holds {shape[0]} images, more than the limit of {max_batch}")
    batch = to_batch(tensor["data"], where="input data", max_batch=max_batch, shape=shape)
    requested = body.get("outputs")
    names: list[str] = [DIGIT_OUTPUT, PROBA_OUTPUT]
    if requested is not None:
        if not isinstance(requested, list) or not all(isinstance(r, dict) and "name" in r for r in requested):
            raise InvalidInput('"outputs" must be a list of {"name": ...} objects')
        names = [r["name"] for r in requested]
        unknown = sorted(set(map(str, names)) - {DIGIT_OUTPUT, PROBA_OUTPUT})
        if unknown:
            raise InvalidInput(f"unknown outputs {unknown}: this model has {DIGIT_OUTPUT!r} and {PROBA_OUTPUT!r}")
    return batch, names


# -- probabilities -> response bodies ---------------------------------------------


def _floats(row: np.ndarray) -> list[float]:
    # shortest text that reads back as the same float32, instead of float64 noise
    return [float(str(v)) for v in row]


def v1_response(proba: np.ndarray) -> dict[str, Any]:
    digits = proba.argmax(axis=1)
    return {"predictions": [{"classes": int(d), "predictions": _floats(p)} for d, p in zip(digits, proba, strict=True)]}


def v2_response(model: Any, proba: np.ndarray, names: list[str], request_id: str) -> dict[str, Any]:
    batch_size = len(proba)
    tensors = {
        DIGIT_OUTPUT: {"name": DIGIT_OUTPUT, "shape": [batch_size], "datatype": "INT64", "data": proba.argmax(axis=1).tolist()},
        PROBA_OUTPUT: {"name": PROBA_OUTPUT, "shape": [batch_size, 10], "datatype": "FP32", "data": _floats(proba.ravel())},
    }
    return {
        "model_name": model.name,
        "model_version": model.version,
        "id": request_id,
        "outputs": [tensors[name] for name in names],
    }


def model_metadata(model: Any) -> dict[str, Any]:
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": "streamapp-numpy",
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, 28, 28]}],
        "outputs": [
            {"name": DIGIT_OUTPUT, "datatype": "INT64", "shape": [-1]},
            {"name": PROBA_OUTPUT, "datatype": "FP32", "shape": [-1, 10]},
        ],
    }


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
    body = await _read_json(request)
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
    return web.json_response({"name": "streamapp-modelserver", "version": _version(), "extensions": []})


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


# -- errors mapped at the edge --------------------------------------------------


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
    app = web.Application(middlewares=[_errors], client_max_size=max_body_bytes)
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
    app.router.add_get("/v1/models", v1_models)
    app.router.add_get(f"/v1/models/{name}", v1_model_ready)
    app.router.add_post(f"/v1/models/{name}:predict", v1_predict)
    app.router.add_get("/v2", v2_server_metadata)
    app.router.add_get("/v2/health/live", v2_live)
    app.router.add_get("/v2/health/ready", v2_ready)
    for base in (f"/v2/models/{name}", f"/v2/models/{name}/versions/{version}"):
        app.router.add_get(base, v2_model_metadata)
        app.router.add_get(f"{base}/ready", v2_model_ready)
        app.router.add_post(f"{base}/infer", v2_infer)
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

    from streamapp.model import DigitModel  # imported here: the CLI's other commands do not need it

    model = DigitModel.load(args.model_path, name=args.model_name)
    if args.fail_on_value is not None:
        log.warning("fault injection: batches holding an image of all %r fail with HTTP 500", args.fail_on_value)
        model = FailingOn(model, args.fail_on_value)
    app = create_app(
        model, max_batch=args.max_batch, max_body_bytes=args.max_body_bytes, use_executor=not args.no_executor
    )
    log.info("serving model %s version %s on %s:%d", model.name, model.version, args.host, args.port)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)
