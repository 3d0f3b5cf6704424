"""The predictor client: a batch of 28x28 tensors -> one digit per tensor.

Reads: answers of a KServe v1 (``:predict``) or Open Inference Protocol v2
(``/infer``) model server: our own :mod:`streamapp.serving.server`, KServe's
ModelServer, MLServer, or any server that speaks either protocol.
Writes: one HTTP request per batch, through the caller's long-lived
``aiohttp.ClientSession``; :class:`Prediction` values for the caller.

Over v2 the batch travels as raw FP32 bytes (the protocol's binary tensor
data extension) to a server that takes them, and as JSON numbers otherwise:
``binary="auto"`` asks the server once, with a blank image, and keeps its
answer (KServe and our server take binary tensors; MLServer answers 4xx).

The encoders and parsers are pure and accept every answer shape real servers
give (see :func:`parse_v1` and :func:`parse_v2`). Failures are mapped at the
edge, in :meth:`PredictorClient.predict`:

* 400, 413, 422 and other 4xx about the request -> ``PredictorRejected``
  (the input will never be accepted: dead-letter it);
* connection errors, timeouts, 5xx, and 4xx that are about the server or the
  route rather than the input (401, 403, 404, 405, 408, 409, 425, 429) ->
  ``PredictorUnavailable``, so a wrong model name or a model still loading
  makes the pipeline wait instead of dead-lettering every image;
* 2xx whose body has no known shape -> ``PredictorProtocolError``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from urllib.parse import quote

import aiohttp
import numpy as np

from streamapp.errors import PredictorProtocolError, PredictorRejected, PredictorUnavailable
from streamapp.serving.protocol import (
    BINARY_HEADER,
    Prediction,
    answer_error,
    brief,
    encode_v1,
    encode_v2,
    encode_v2_binary,
    parse_v1,
    parse_v2,
    paths,
    read_binary_body,
)

log = logging.getLogger(__name__)

#: 4xx statuses that say the server or the route is wrong, not the input
_NOT_THE_INPUTS_FAULT = frozenset({401, 403, 404, 405, 408, 409, 425, 429})
_REASON_CHARS = 500

#: ``binary`` settings: ask the server once, always, never
BINARY_MODES = ("auto", "on", "off")
_PROBE = np.zeros((1, 28, 28), dtype=np.float32)


class PredictorClient:
    """Sends batches to one model on one server, through the caller's session.

    The session is owned by the caller (one per worker, opened and closed with
    the app); the client holds no per-request state, so one instance serves
    every concurrent batch.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        model_name: str,
        protocol: str = "v2",
        timeout: float = 10.0,
        binary: str = "auto",
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.model_name = model_name
        self.protocol = protocol
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        if binary not in BINARY_MODES:
            raise ValueError(f"binary={binary!r}: expected one of {BINARY_MODES}")
        #: v2 only: True/False once known, None until the server was asked (auto)
        self.binary: bool | None = protocol == "v2" and {"on": True, "off": False}.get(binary)
        self._probing = asyncio.Lock()
        route = paths(protocol, quote(model_name, safe=""))  # refuses an unknown protocol
        self.predict_url = self.base_url + route["predict"]
        self.ready_url = self.base_url + route["ready"]

    async def predict(self, batch: np.ndarray) -> list[Prediction]:
        """(B, 28, 28) float32 -> B predictions, in order; one request."""
        if len(batch) == 0:
            return []
        if self.protocol == "v2" and self.binary is None:
            await self._ask_for_binary()
        return await self._predict(batch, binary=bool(self.binary))

    async def _predict(self, batch: np.ndarray, *, binary: bool) -> list[Prediction]:
        request_id = None
        headers = {"Content-Type": "application/json"}
        if self.protocol == "v1":
            data = json.dumps(encode_v1(batch), separators=(",", ":")).encode()
        elif binary:
            request_id = uuid.uuid4().hex
            data, json_length = encode_v2_binary(batch, request_id=request_id)
            headers = {"Content-Type": "application/octet-stream", BINARY_HEADER: str(json_length)}
        else:
            request_id = uuid.uuid4().hex
            data = json.dumps(encode_v2(batch, request_id=request_id), separators=(",", ":")).encode()
        status, raw, answer_length = await self._post(data, headers)
        if status >= 400:
            reason = _reason(raw)
            message = f"predictor answered {status} for a batch of {len(batch)}: {reason}"
            if status >= 500 or status in _NOT_THE_INPUTS_FAULT:
                raise PredictorUnavailable(message, status=status)
            raise PredictorRejected(message)
        if not 200 <= status < 300:
            raise PredictorProtocolError(f"predictor answered {status} to {self.predict_url}")
        try:
            body = json.loads(raw) if answer_length is None else read_binary_body(
                raw, answer_length, "outputs", error=PredictorProtocolError)
        except ValueError:
            raise answer_error(f"{status} with a body that is not JSON: {brief(raw[:200])}") from None
        if self.protocol == "v1":
            predictions = parse_v1(body, len(batch))
        else:
            answered_id = body.get("id") if isinstance(body, dict) else None
            if answered_id not in (None, request_id):
                raise answer_error(f"answer id {brief(answered_id)} is not the request id {request_id!r}")
            predictions = parse_v2(body, len(batch))
        return predictions

    async def _ask_for_binary(self) -> None:
        """Decide ``self.binary`` by sending a blank image as binary tensor data.

        An answer the client can read: binary. A 4xx about the input, or an
        answer it cannot read: JSON, for good; so too a 5xx when the same image
        as JSON is answered. Unreachable, or failing JSON too:
        ``PredictorUnavailable``, undecided (the caller retries, and asks again).
        """
        async with self._probing:
            if self.binary is not None:
                return
            try:
                await self._predict(_PROBE, binary=True)
            except (PredictorRejected, PredictorProtocolError) as exc:
                refused: Exception = exc
            except PredictorUnavailable as exc:
                if exc.status is None or exc.status in _NOT_THE_INPUTS_FAULT:
                    raise
                await self._predict(_PROBE, binary=False)  # raises when the server fails JSON as well
                refused = exc
            else:
                log.info("predictor %s takes binary tensor data", self.predict_url)
                self.binary = True
                return
            log.info("predictor %s does not take binary tensor data (%s): sending JSON", self.predict_url, refused)
            self.binary = False

    async def _post(self, data: bytes, headers: dict[str, str]) -> tuple[int, bytes, str | None]:
        try:
            async with self.session.post(self.predict_url, data=data, headers=headers, timeout=self.timeout) as response:
                return response.status, await response.read(), response.headers.get(BINARY_HEADER)
        except (TimeoutError, aiohttp.ClientError) as exc:  # refused, reset, timed out, cut short
            raise PredictorUnavailable(f"predictor at {self.predict_url}: {type(exc).__name__}: {exc}") from exc

    async def ready(self) -> bool:
        """True when the server says the model is ready (200, and no ``"ready": false``)."""
        try:
            async with self.session.get(self.ready_url, timeout=self.timeout) as response:
                if response.status != 200:
                    return False
                raw = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.debug("predictor readiness %s: %s", self.ready_url, exc)
            return False
        # MLServer answers 200 with an empty body; KServe and ours answer {"ready": true}
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return True
        return not (isinstance(body, dict) and body.get("ready") is False)


def _reason(raw: bytes) -> str:
    """The server's own words for an error: ``{"error": ...}``, FastAPI's ``detail``, or the text."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            if key in body:
                value = body[key]
                text = value if isinstance(value, str) else json.dumps(value)
                return text[:_REASON_CHARS]
    text = raw.decode("utf-8", "replace").strip()
    return text[:_REASON_CHARS] or "(empty body)"

