"""The predictor client: a batch of 28x28 tensors -> one digit per tensor.

Reads: answers of a KServe v1 (``:predict``) or Open Inference Protocol v2
(``/infer``) model server: our own :mod:`streamapp.modelserver`, KServe's
ModelServer, MLServer, or any server that speaks either protocol.
Writes: one HTTP request per batch, through the caller's long-lived
``aiohttp.ClientSession``; :class:`Prediction` values for the caller.

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

import dataclasses
import json
import logging
import math
import uuid
from typing import Any
from urllib.parse import quote

import aiohttp
import numpy as np

from streamapp.errors import PredictorProtocolError, PredictorRejected, PredictorUnavailable

log = logging.getLogger(__name__)

#: name of the one input tensor in v2 requests (our server, KServe and MLServer do not check it)
V2_INPUT_NAME = "image"
#: v2 output names, lower-cased, that hold the digit or the class probabilities
DIGIT_NAMES = frozenset({"digit", "digits", "class", "classes", "class_ids", "label", "labels", "predict", "prediction"})
PROBA_NAMES = frozenset({"probabilities", "probability", "probs", "proba", "predict_proba", "softmax", "scores"})
#: 4xx statuses that say the server or the route is wrong, not the input
_NOT_THE_INPUTS_FAULT = frozenset({401, 403, 404, 405, 408, 409, 425, 429})
_INT_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
_FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})
_REASON_CHARS = 500


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The predictor's answer for one image."""

    digit: int
    #: ten class probabilities when the server sent them (and they sum to 1), else None
    probabilities: tuple[float, ...] | None


# -- requests -------------------------------------------------------------------


def _check_batch(batch: np.ndarray) -> np.ndarray:
    batch = np.asarray(batch)
    if batch.ndim != 3 or batch.shape[1:] != (28, 28):
        raise ValueError(f"batch shape {batch.shape}, expected (B, 28, 28)")
    # float32 -> Python floats is exact, so the server sees the very same values
    return batch.astype(np.float32, copy=False)


def encode_v1(batch: np.ndarray) -> dict[str, Any]:
    """(B, 28, 28) -> ``{"instances": [28 rows of 28 floats, ...]}`` (KServe v1)."""
    return {"instances": _check_batch(batch).tolist()}


def encode_v2(batch: np.ndarray, *, request_id: str | None = None) -> dict[str, Any]:
    """(B, 28, 28) -> an Open Inference Protocol request: one FP32 tensor, flat data."""
    batch = _check_batch(batch)
    body: dict[str, Any] = {
        "inputs": [{"name": V2_INPUT_NAME, "shape": list(batch.shape), "datatype": "FP32", "data": batch.ravel().tolist()}]
    }
    if request_id is not None:
        body["id"] = request_id
    return body


# -- answers: v1 ------------------------------------------------------------------


def _fail(message: str) -> PredictorProtocolError:
    return PredictorProtocolError(f"predictor answer: {message}")


def _digit(value: Any, where: str) -> int:
    """A class label as servers write it: 7, 7.0, "7", [7] or ["7"] -> 7."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool):
        raise _fail(f"{where} is a boolean, not a digit")
    if isinstance(value, str) and len(value) == 1 and value.isdigit():
        return int(value)
    if isinstance(value, int | float) and math.isfinite(value) and value == int(value) and 0 <= value <= 9:
        return int(value)
    raise _fail(f"{where} is {_short(value)}, not a digit 0-9")


def _scores(value: Any, where: str) -> np.ndarray:
    """Ten finite class scores, or ``PredictorProtocolError``."""
    if not isinstance(value, list) or len(value) != 10:
        raise _fail(f"{where} is {_short(value)}, not a list of 10 class scores")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise _fail(f"{where} holds non-numbers: {_short(value)}")
    scores = np.asarray(value, dtype=np.float64)
    if not np.isfinite(scores).all():
        raise _fail(f"{where} holds NaN or infinity")
    return scores


def _probabilities(scores: np.ndarray) -> tuple[float, ...] | None:
    # logits or scores still name the digit by their argmax, but are no probabilities
    if scores.min() < 0.0 or scores.max() > 1.0 or abs(float(scores.sum()) - 1.0) > 1e-3:
        return None
    return tuple(float(s) for s in scores)


def _from_scores(scores: np.ndarray, digit: int | None, where: str) -> Prediction:
    best = int(scores.argmax())
    if digit is not None and scores[digit] < scores[best] - 1e-6:
        raise _fail(f"{where}: class {digit} disagrees with the highest score, class {best}")
    return Prediction(best if digit is None else digit, _probabilities(scores))


def _v1_item(item: Any, where: str) -> Prediction:
    if isinstance(item, dict):
        label_key = next((k for k in ("classes", "class_ids", "digit") if k in item), None)
        score_key = next((k for k in ("probabilities", "predictions", "scores") if k in item), None)
        if label_key is None and score_key is None:
            raise _fail(f"{where} has neither classes nor probabilities: keys {sorted(item)[:10]}")
        digit = _digit(item[label_key], f"{where}.{label_key}") if label_key else None
        if score_key is None:
            return Prediction(digit, None)  # type: ignore[arg-type]  # label_key was set
        return _from_scores(_scores(item[score_key], f"{where}.{score_key}"), digit, where)
    if isinstance(item, list) and len(item) == 10:
        return _from_scores(_scores(item, where), None, where)
    return Prediction(_digit(item, where), None)


def parse_v1(body: Any, batch_size: int) -> list[Prediction]:
    """A KServe v1 answer -> one ``Prediction`` per image, in order.

    Accepted items of ``"predictions"``: a class (``4``, ``4.0``, ``"4"``,
    ``[4]``); ten class scores (digit = argmax); or an object with
    ``classes`` / ``class_ids`` / ``digit`` and/or ``predictions`` /
    ``probabilities`` / ``scores`` (the TF MNIST sample's shape).
    """
    if not isinstance(body, dict) or not isinstance(body.get("predictions"), list):
        raise _fail(f'expected {{"predictions": [...]}}, got {_short(body)}')
    items = body["predictions"]
    if len(items) != batch_size:
        raise _fail(f"{len(items)} predictions for {batch_size} images")
    return [_v1_item(item, f"predictions[{i}]") for i, item in enumerate(items)]


# -- answers: v2 ------------------------------------------------------------------


def _tensor(output: Any, index: int) -> tuple[str, str, np.ndarray]:
    """One v2 output -> (lower-cased name, datatype, array in its declared shape)."""
    if not isinstance(output, dict) or not all(k in output for k in ("name", "shape", "datatype", "data")):
        raise _fail(f"outputs[{index}] is not a tensor with name, shape, datatype and data")
    name, shape, datatype = output["name"], output["shape"], output["datatype"]
    where = f"output {name!r}"
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise _fail(f"{where} has shape {_short(shape)}")
    if datatype in _INT_TYPES or datatype in _FLOAT_TYPES:
        try:
            array = np.asarray(output["data"])
        except (ValueError, TypeError):
            raise _fail(f"{where} data is ragged") from None
        if array.size and array.dtype.kind not in "iuf":
            raise _fail(f"{where} ({datatype}) holds non-numbers")
    elif datatype == "BYTES":  # labels as strings, e.g. MLServer's StringCodec
        array = np.asarray(output["data"], dtype=object)
    else:
        return str(name).lower(), str(datatype), np.empty(0)  # BOOL etc.: never a digit, ignored
    if array.size != math.prod(shape):
        raise _fail(f"{where} holds {array.size} values for shape {shape}")
    return str(name).lower(), str(datatype), array.reshape(shape)


def _is_digits(datatype: str, array: np.ndarray, batch_size: int) -> bool:
    return (datatype in _INT_TYPES or datatype == "BYTES") and array.shape in ((batch_size,), (batch_size, 1))


def _is_scores(datatype: str, array: np.ndarray, batch_size: int) -> bool:
    return datatype in _FLOAT_TYPES and array.shape == (batch_size, 10)


def _pick(tensors: list[tuple[str, str, np.ndarray]], names: frozenset[str], fits: Any, what: str) -> np.ndarray | None:
    """The one output that holds ``what``: by name first, else the only one of a fitting shape."""
    named = [array for name, datatype, array in tensors if name in names and fits(datatype, array)]
    if named:
        return named[0]
    fitting = [array for _, datatype, array in tensors if fits(datatype, array)]
    if len(fitting) > 1:
        raise _fail(f"{len(fitting)} unnamed outputs could hold the {what}; name one of {sorted(names)}")
    return fitting[0] if fitting else None


def parse_v2(body: Any, batch_size: int) -> list[Prediction]:
    """An Open Inference Protocol answer -> one ``Prediction`` per image, in order.

    Digits: an integer (or BYTES) output of shape ``[B]`` or ``[B, 1]``.
    Probabilities: an FP16/32/64 output of shape ``[B, 10]`` (digit = argmax
    when there is no digit output). Outputs are picked by name (``digit``,
    ``probabilities`` ...) and otherwise by shape and datatype; ``data`` may
    be flat or nested.
    """
    if not isinstance(body, dict) or not isinstance(body.get("outputs"), list):
        raise _fail(f'expected {{"outputs": [...]}}, got {_short(body)}')
    tensors = [_tensor(output, i) for i, output in enumerate(body["outputs"])]
    digits = _pick(tensors, DIGIT_NAMES, lambda t, a: _is_digits(t, a, batch_size), "digits")
    scores = _pick(tensors, PROBA_NAMES, lambda t, a: _is_scores(t, a, batch_size), "probabilities")
    if digits is None and scores is None:
        seen = [f"{name} {datatype} {list(array.shape)}" for name, datatype, array in tensors]
        raise _fail(f"no output holds {batch_size} digits ([B] or [B, 1] integers) or [B, 10] probabilities; saw {seen}")
    labels = digits.reshape(batch_size).tolist() if digits is not None else [None] * batch_size
    predictions = []
    for i, label in enumerate(labels):
        digit = None if label is None else _digit(label, f"digit[{i}]")
        if scores is None:
            predictions.append(Prediction(digit, None))  # type: ignore[arg-type]  # digits were found
            continue
        row = scores[i].astype(np.float64)
        if not np.isfinite(row).all():
            raise _fail(f"probabilities[{i}] holds NaN or infinity")
        predictions.append(_from_scores(row, digit, f"image {i}"))
    return predictions


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- the client -------------------------------------------------------------------


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
    ) -> None:
        if protocol not in ("v1", "v2"):
            raise ValueError(f"protocol {protocol!r}: expected 'v1' or 'v2'")
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.model_name = model_name
        self.protocol = protocol
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        model = quote(model_name, safe="")
        if protocol == "v1":
            self.predict_url = f"{self.base_url}/v1/models/{model}:predict"
            self.ready_url = f"{self.base_url}/v1/models/{model}"
        else:
            self.predict_url = f"{self.base_url}/v2/models/{model}/infer"
            self.ready_url = f"{self.base_url}/v2/models/{model}/ready"

    async def predict(self, batch: np.ndarray) -> list[Prediction]:
        """(B, 28, 28) float32 -> B predictions, in order; one request."""
        if len(batch) == 0:
            return []
        request_id = None
        if self.protocol == "v1":
            payload = encode_v1(batch)
        else:
            request_id = uuid.uuid4().hex
            payload = encode_v2(batch, request_id=request_id)
        data = json.dumps(payload, separators=(",", ":")).encode()
        status, raw = await self._post(data)
        if status >= 400:
            reason = _reason(raw)
            message = f"predictor answered {status} for a batch of {len(batch)}: {reason}"
            if status >= 500 or status in _NOT_THE_INPUTS_FAULT:
                raise PredictorUnavailable(message, status=status)
            raise PredictorRejected(message)
        if not 200 <= status < 300:
            raise PredictorProtocolError(f"predictor answered {status} to {self.predict_url}")
        try:
            body = json.loads(raw)
        except ValueError:
            raise _fail(f"{status} with a body that is not JSON: {_short(raw[:200])}") from None
        if self.protocol == "v1":
            predictions = parse_v1(body, len(batch))
        else:
            answered_id = body.get("id") if isinstance(body, dict) else None
            if answered_id not in (None, request_id):
                raise _fail(f"answer id {_short(answered_id)} is not the request id {request_id!r}")
            predictions = parse_v2(body, len(batch))
        return predictions

    async def _post(self, data: bytes) -> tuple[int, bytes]:
        try:
            async with self.session.post(
                self.predict_url, data=data, headers={"Content-Type": "application/json"}, timeout=self.timeout
            ) as response:
                return response.status, await response.read()
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

