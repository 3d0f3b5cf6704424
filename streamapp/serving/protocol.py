"""The wire format of KServe v1 and the Open Inference Protocol v2 (REST), both ways.

One module for what the model server (:mod:`.server`) and the workers'
client (:mod:`.client`) must agree on: the URL paths, the tensor names and
datatypes, and for each protocol the request (encoded by the client, read
and checked by the server) and the answer (written by the server, read by the
client, which also accepts the shapes KServe's ModelServer and MLServer
give). Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

from streamapp.errors import PredictorProtocolError

PROTOCOLS = ("v1", "v2")

#: the one input tensor of a v2 request (our server, KServe and MLServer do not check its name)
INPUT_NAME = "image"
#: our server's v2 outputs
DIGIT_OUTPUT = "digit"
PROBA_OUTPUT = "probabilities"
#: v2 output names, lower-cased, that hold the digit or the class probabilities in other servers' answers
DIGIT_NAMES = frozenset({"digit", "digits", "class", "classes", "class_ids", "label", "labels", "predict", "prediction"})
PROBA_NAMES = frozenset({"probabilities", "probability", "probs", "proba", "predict_proba", "softmax", "scores"})
_INT_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
_FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})
_V2_INPUT_TYPES = ("FP32", "FP64")  # JSON carries no precision; FP64 clients are fine

#: the Open Inference Protocol's binary tensor data extension (KServe, Triton):
#: this HTTP header gives the length of the JSON part of the body; the raw
#: bytes of each tensor whose ``parameters`` hold ``binary_data_size`` follow
#: it, in the order of the tensors
BINARY_HEADER = "Inference-Header-Content-Length"
_BINARY_DTYPES = {"FP32": "<f4", "FP64": "<f8", "FP16": "<f2", "INT64": "<i8", "INT32": "<i4", "UINT8": "u1"}


def paths(protocol: str, model: str) -> dict[str, str]:
    """The ``predict`` and ``ready`` paths for ``model`` (already URL-quoted, or a route pattern)."""
    if protocol == "v1":
        return {"predict": f"/v1/models/{model}:predict", "ready": f"/v1/models/{model}"}
    if protocol == "v2":
        return {"predict": f"/v2/models/{model}/infer", "ready": f"/v2/models/{model}/ready"}
    raise ValueError(f"protocol {protocol!r}: expected 'v1' or 'v2'")


class InvalidInput(ValueError):
    """The request is unusable as sent: answered with HTTP 400 and the reason."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The predictor's answer for one image."""

    digit: int
    #: ten class probabilities when the server sent them (and they sum to 1), else None
    probabilities: tuple[float, ...] | None


# -- requests, as the client sends them --------------------------------------------


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
        "inputs": [{"name": INPUT_NAME, "shape": list(batch.shape), "datatype": "FP32", "data": batch.ravel().tolist()}]
    }
    if request_id is not None:
        body["id"] = request_id
    return body


def encode_v2_binary(batch: np.ndarray, *, request_id: str | None = None) -> tuple[bytes, int]:
    """(B, 28, 28) -> (body, length of its JSON part): :func:`encode_v2` with the
    tensor as raw little-endian FP32 after the JSON, 3.1 KB an image instead
    of ~8 KB of decimal text, and no float formatting on either side."""
    data = np.ascontiguousarray(_check_batch(batch), dtype="<f4")
    header: dict[str, Any] = {
        "inputs": [{"name": INPUT_NAME, "shape": list(data.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": data.nbytes}}]
    }
    if request_id is not None:
        header["id"] = request_id
    text = json.dumps(header, separators=(",", ":")).encode()
    return text + data.tobytes(), len(text)


def read_binary_body(raw: bytes, header_length: str, tensors: str, *, error: type[Exception]) -> Any:
    """A v2 body with binary tensor data -> its JSON object, each binary
    tensor's bytes put into its ``data`` as a flat array.

    ``header_length`` is the :data:`BINARY_HEADER` value; ``tensors`` names the
    list that may hold binary tensors (``"inputs"`` in a request, ``"outputs"``
    in an answer); a malformed body raises ``error`` with the reason.
    """
    try:
        split = int(header_length)
    except ValueError:
        raise error(f"{BINARY_HEADER} is {brief(header_length)}, not a byte count") from None
    if not 0 <= split <= len(raw):
        raise error(f"{BINARY_HEADER} is {split}, but the body has {len(raw)} bytes")
    try:
        body = json.loads(raw[:split], parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise error(f"the JSON part of the body is not valid JSON: {exc}") from None
    offset = split
    for tensor in (body.get(tensors) or []) if isinstance(body, dict) else []:
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            continue
        name = brief(tensor.get("name"))
        dtype = _BINARY_DTYPES.get(tensor.get("datatype"))
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(raw):
            raise error(f"tensor {name}: binary_data_size {brief(size)} does not fit the {len(raw) - offset} bytes left")
        if dtype is None:
            raise error(f"tensor {name}: binary data of datatype {brief(tensor.get('datatype'))} is not supported")
        if size % np.dtype(dtype).itemsize:
            raise error(f"tensor {name}: {size} bytes is not a whole number of {tensor['datatype']} values")
        tensor["data"] = np.frombuffer(raw, dtype=dtype, count=size // np.dtype(dtype).itemsize, offset=offset)
        offset += size
    if offset != len(raw):
        raise error(f"{len(raw) - offset} bytes after the last binary tensor")
    return body


# -- requests, as the server reads them --------------------------------------------


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


# -- answers, as the server writes them --------------------------------------------


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


# -- answers, as the client reads them: v1 -----------------------------------------


def answer_error(message: str) -> PredictorProtocolError:
    return PredictorProtocolError(f"predictor answer: {message}")


def _digit(value: Any, where: str) -> int:
    """A class label as servers write it: 7, 7.0, "7", [7] or ["7"] -> 7."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool):
        raise answer_error(f"{where} is a boolean, not a digit")
    if isinstance(value, str) and len(value) == 1 and value.isdigit():
        return int(value)
    if isinstance(value, int | float) and math.isfinite(value) and value == int(value) and 0 <= value <= 9:
        return int(value)
    raise answer_error(f"{where} is {brief(value)}, not a digit 0-9")


def _scores(value: Any, where: str) -> np.ndarray:
    """Ten finite class scores, or ``PredictorProtocolError``."""
    if not isinstance(value, list) or len(value) != 10:
        raise answer_error(f"{where} is {brief(value)}, not a list of 10 class scores")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise answer_error(f"{where} holds non-numbers: {brief(value)}")
    scores = np.asarray(value, dtype=np.float64)
    if not np.isfinite(scores).all():
        raise answer_error(f"{where} holds NaN or infinity")
    return scores


def _probabilities(scores: np.ndarray) -> tuple[float, ...] | None:
    # logits or scores still name the digit by their argmax, but are no probabilities
    if scores.min() < 0.0 or scores.max() > 1.0 or abs(float(scores.sum()) - 1.0) > 1e-3:
        return None
    return tuple(float(s) for s in scores)


def _from_scores(scores: np.ndarray, digit: int | None, where: str) -> Prediction:
    best = int(scores.argmax())
    if digit is not None and scores[digit] < scores[best] - 1e-6:
        raise answer_error(f"{where}: class {digit} disagrees with the highest score, class {best}")
    return Prediction(best if digit is None else digit, _probabilities(scores))


def _v1_item(item: Any, where: str) -> Prediction:
    if isinstance(item, dict):
        label_key = next((k for k in ("classes", "class_ids", "digit") if k in item), None)
        score_key = next((k for k in ("probabilities", "predictions", "scores") if k in item), None)
        if label_key is None and score_key is None:
            raise answer_error(f"{where} has neither classes nor probabilities: keys {sorted(item)[:10]}")
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
        raise answer_error(f'expected {{"predictions": [...]}}, got {brief(body)}')
    items = body["predictions"]
    if len(items) != batch_size:
        raise answer_error(f"{len(items)} predictions for {batch_size} images")
    return [_v1_item(item, f"predictions[{i}]") for i, item in enumerate(items)]


# -- answers, as the client reads them: v2 -----------------------------------------


def _tensor(output: Any, index: int) -> tuple[str, str, np.ndarray]:
    """One v2 output -> (lower-cased name, datatype, array in its declared shape)."""
    if not isinstance(output, dict) or not all(k in output for k in ("name", "shape", "datatype", "data")):
        raise answer_error(f"outputs[{index}] is not a tensor with name, shape, datatype and data")
    name, shape, datatype = output["name"], output["shape"], output["datatype"]
    where = f"output {name!r}"
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise answer_error(f"{where} has shape {brief(shape)}")
    if datatype in _INT_TYPES or datatype in _FLOAT_TYPES:
        try:
            array = np.asarray(output["data"])
        except (ValueError, TypeError):
            raise answer_error(f"{where} data is ragged") from None
        if array.size and array.dtype.kind not in "iuf":
            raise answer_error(f"{where} ({datatype}) holds non-numbers")
    elif datatype == "BYTES":  # labels as strings, e.g. MLServer's StringCodec
        array = np.asarray(output["data"], dtype=object)
    else:
        return str(name).lower(), str(datatype), np.empty(0)  # BOOL etc.: never a digit, ignored
    if array.size != math.prod(shape):
        raise answer_error(f"{where} holds {array.size} values for shape {shape}")
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
        raise answer_error(f"{len(fitting)} unnamed outputs could hold the {what}; name one of {sorted(names)}")
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
        raise answer_error(f'expected {{"outputs": [...]}}, got {brief(body)}')
    tensors = [_tensor(output, i) for i, output in enumerate(body["outputs"])]
    digits = _pick(tensors, DIGIT_NAMES, lambda t, a: _is_digits(t, a, batch_size), "digits")
    scores = _pick(tensors, PROBA_NAMES, lambda t, a: _is_scores(t, a, batch_size), "probabilities")
    if digits is None and scores is None:
        seen = [f"{name} {datatype} {list(array.shape)}" for name, datatype, array in tensors]
        raise answer_error(f"no output holds {batch_size} digits ([B] or [B, 1] integers) or [B, 10] probabilities; saw {seen}")
    labels = digits.reshape(batch_size).tolist() if digits is not None else [None] * batch_size
    predictions = []
    for i, label in enumerate(labels):
        digit = None if label is None else _digit(label, f"digit[{i}]")
        if scores is None:
            predictions.append(Prediction(digit, None))  # type: ignore[arg-type]  # digits were found
            continue
        row = scores[i].astype(np.float64)
        if not np.isfinite(row).all():
            raise answer_error(f"probabilities[{i}] holds NaN or infinity")
        predictions.append(_from_scores(row, digit, f"image {i}"))
    return predictions


def brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
