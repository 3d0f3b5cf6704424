"""streamapp.serving.protocol, the client's half: requests as it encodes them, and
every answer shape real servers give, read back (pure, no servers)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from streamapp.errors import PredictorProtocolError
from streamapp.serving.protocol import (
    InvalidInput,
    Prediction,
    encode_v1,
    encode_v2,
    encode_v2_binary,
    parse_v1,
    parse_v2,
    paths,
    read_binary_body,
)

ONE_HOT_7 = [0.0] * 7 + [1.0] + [0.0] * 2


def proba(digit: int, top: float = 0.91) -> list[float]:
    rest = (1.0 - top) / 9
    return [top if i == digit else rest for i in range(10)]


# -- routes -----------------------------------------------------------------------


def test_one_table_of_routes_for_client_and_server() -> None:
    assert paths("v1", "digits") == {"predict": "/v1/models/digits:predict", "ready": "/v1/models/digits"}
    assert paths("v2", "digits") == {"predict": "/v2/models/digits/infer", "ready": "/v2/models/digits/ready"}
    with pytest.raises(ValueError, match="'v3': expected 'v1' or 'v2'"):
        paths("v3", "digits")


# -- encoders ---------------------------------------------------------------------


@pytest.fixture
def batch() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.random((3, 28, 28), dtype=np.float32)


def test_encode_v1_round_trips_exactly_through_json(batch: np.ndarray) -> None:
    body = json.loads(json.dumps(encode_v1(batch)))
    assert list(body) == ["instances"]
    decoded = np.asarray(body["instances"], dtype=np.float32)
    assert decoded.shape == (3, 28, 28)
    assert np.array_equal(decoded, batch)


def test_encode_v2_round_trips_exactly_through_json(batch: np.ndarray) -> None:
    body = json.loads(json.dumps(encode_v2(batch, request_id="req-1")))
    assert body["id"] == "req-1"
    (tensor,) = body["inputs"]
    assert tensor["shape"] == [3, 28, 28]
    assert tensor["datatype"] == "FP32"
    assert len(tensor["data"]) == 3 * 784  # flat, row-major
    assert np.array_equal(np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"]), batch)
    assert "id" not in encode_v2(batch)


def test_encoders_refuse_batches_of_the_wrong_shape() -> None:
    for bad in (np.zeros((2, 784), np.float32), np.zeros((28, 28), np.float32), np.zeros((1, 28, 27), np.float32)):
        with pytest.raises(ValueError, match="expected"):
            encode_v1(bad)
        with pytest.raises(ValueError, match="expected"):
            encode_v2(bad)


# -- v1 answers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "digits"),
    [
        ({"predictions": [4, 8]}, [4, 8]),  # KServe ModelServer, plain classifier
        ({"predictions": [4.0, 8.0]}, [4, 8]),  # labels as floats (xgboost-like)
        ({"predictions": ["4", "8"]}, [4, 8]),  # labels as strings
        ({"predictions": [[4], [8]]}, [4, 8]),  # a [B, 1] array's tolist()
        ({"predictions": [{"classes": 4}, {"classes": [8]}]}, [4, 8]),
        ({"predictions": [{"class_ids": [4]}, {"digit": 8}]}, [4, 8]),
    ],
)
def test_parse_v1_plain_classes(body: Any, digits: list[int]) -> None:
    assert parse_v1(body, 2) == [Prediction(d, None) for d in digits]


def test_parse_v1_the_kserve_tf_sample_shape() -> None:
    body = {"predictions": [{"classes": 7, "predictions": ONE_HOT_7}, {"classes": 2, "predictions": proba(2)}]}
    first, second = parse_v1(body, 2)
    assert first == Prediction(7, tuple(ONE_HOT_7))
    assert second.digit == 2
    assert second.probabilities is not None and math.isclose(sum(second.probabilities), 1.0)


def test_parse_v1_tf_estimator_shape_with_string_classes() -> None:
    body = {"predictions": [{"class_ids": [3], "classes": ["3"], "probabilities": proba(3), "logits": [0.0] * 10}]}
    assert parse_v1(body, 1)[0].digit == 3


def test_parse_v1_probability_vectors_take_the_argmax() -> None:
    body = {"predictions": [proba(5), proba(0)]}
    result = parse_v1(body, 2)
    assert [p.digit for p in result] == [5, 0]
    assert result[0].probabilities == tuple(proba(5))


def test_parse_v1_scores_that_are_no_probabilities_keep_only_the_digit() -> None:
    logits = [-3.0, 1.0, 9.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]
    assert parse_v1({"predictions": [logits]}, 1) == [Prediction(2, None)]
    assert parse_v1({"predictions": [{"predictions": logits}]}, 1) == [Prediction(2, None)]


@pytest.mark.parametrize(
    ("body", "batch_size", "message"),
    [
        ([4, 8], 2, "expected"),
        ({"outputs": []}, 2, "expected"),
        ({"predictions": {"a": 1}}, 1, "expected"),
        ({"predictions": [4]}, 2, "1 predictions for 2 images"),
        ({"predictions": [4, 8, 1]}, 2, "3 predictions for 2 images"),
        ({"predictions": [10]}, 1, "not a digit"),
        ({"predictions": [-1]}, 1, "not a digit"),
        ({"predictions": [4.5]}, 1, "not a digit"),
        ({"predictions": [True]}, 1, "boolean"),
        ({"predictions": ["seven"]}, 1, "not a digit"),
        ({"predictions": [None]}, 1, "not a digit"),
        ({"predictions": [[0.5] * 9]}, 1, "not a digit"),
        ({"predictions": [[float("nan")] + [0.1] * 9]}, 1, "NaN"),
        ({"predictions": [["0.1"] * 10]}, 1, "non-numbers"),
        ({"predictions": [{"score": 3}]}, 1, "neither classes nor probabilities"),
        ({"predictions": [{"classes": 3, "predictions": proba(7)}]}, 1, "disagrees"),
        ({"predictions": [{"classes": 12}]}, 1, "not a digit"),
    ],
)
def test_parse_v1_refuses_unknown_shapes(body: Any, batch_size: int, message: str) -> None:
    with pytest.raises(PredictorProtocolError, match=message):
        parse_v1(body, batch_size)


# -- v2 answers -------------------------------------------------------------------


def tensor(name: str, datatype: str, shape: list[int], data: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def test_parse_v2_our_servers_shape() -> None:
    body = {
        "model_name": "mnist",
        "id": "x",
        "outputs": [
            tensor("digit", "INT64", [2], [7, 1]),
            tensor("probabilities", "FP32", [2, 10], ONE_HOT_7 + proba(1)),
        ],
    }
    first, second = parse_v2(body, 2)
    assert first == Prediction(7, tuple(ONE_HOT_7))
    assert second.digit == 1 and second.probabilities is not None


def test_parse_v2_mlserver_numpy_codec_shape() -> None:
    # NumpyCodec adds a batch dimension to 1-D outputs: digits come as [B, 1]
    body = {
        "outputs": [
            tensor("digit", "INT64", [2, 1], [7, 1]),
            tensor("probabilities", "FP32", [2, 10], [ONE_HOT_7, proba(1)]),  # nested data
        ]
    }
    assert [p.digit for p in parse_v2(body, 2)] == [7, 1]
    body["outputs"][0]["data"] = [[7], [1]]
    assert [p.digit for p in parse_v2(body, 2)] == [7, 1]


@pytest.mark.parametrize("datatype", ["INT64", "INT32", "UINT8"])
def test_parse_v2_an_unnamed_digit_output_alone(datatype: str) -> None:
    body = {"outputs": [tensor("output-0", datatype, [3], [4, 0, 9])]}  # KServe names unnamed outputs so
    assert parse_v2(body, 3) == [Prediction(4, None), Prediction(0, None), Prediction(9, None)]


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "FP16"])
def test_parse_v2_probabilities_alone_take_the_argmax(datatype: str) -> None:
    body = {"outputs": [tensor("output-0", datatype, [2, 10], [proba(3), proba(6)])]}
    result = parse_v2(body, 2)
    assert [p.digit for p in result] == [3, 6]
    assert all(p.probabilities is not None for p in result)


def test_parse_v2_picks_outputs_by_shape_when_names_say_nothing() -> None:
    body = {
        "outputs": [
            tensor("out_b", "FP32", [2, 10], proba(5) + proba(8)),
            tensor("out_a", "INT64", [2], [5, 8]),
            tensor("extra", "FP32", [2, 3], [0.0] * 6),  # neither shape: ignored
        ]
    }
    assert [p.digit for p in parse_v2(body, 2)] == [5, 8]


def test_parse_v2_picks_by_name_among_lookalikes() -> None:
    body = {
        "outputs": [
            tensor("top_k", "INT64", [2], [0, 0]),
            tensor("classes", "INT64", [2], [5, 8]),
            tensor("logits", "FP32", [2, 10], [0.0] * 20),
            tensor("probabilities", "FP32", [2, 10], proba(5) + proba(8)),
        ]
    }
    assert [p.digit for p in parse_v2(body, 2)] == [5, 8]


def test_parse_v2_labels_as_bytes() -> None:
    body = {"outputs": [tensor("label", "BYTES", [2], ["5", "8"])]}
    assert [p.digit for p in parse_v2(body, 2)] == [5, 8]


def test_parse_v2_logits_keep_only_the_digit() -> None:
    body = {"outputs": [tensor("scores", "FP32", [1, 10], [1.0, 2.0, 30.0] + [0.0] * 7)]}
    assert parse_v2(body, 1) == [Prediction(2, None)]


@pytest.mark.parametrize(
    ("body", "batch_size", "message"),
    [
        ({"predictions": [1]}, 1, "expected"),
        ("garbage", 1, "expected"),
        ({"outputs": []}, 1, "no output holds"),
        ({"outputs": ["x"]}, 1, "not a tensor"),
        ({"outputs": [tensor("digit", "INT64", [3], [1, 2, 3])]}, 2, "no output holds 2 digits"),
        ({"outputs": [tensor("digit", "INT64", [2], [1, 2, 3])]}, 2, "3 values for shape"),
        ({"outputs": [tensor("digit", "INT64", [2], [1, 12])]}, 2, "not a digit"),
        ({"outputs": [tensor("digit", "INT64", [2], [1, -1])]}, 2, "not a digit"),
        ({"outputs": [tensor("digit", "INT64", [2], ["a", "b"])]}, 2, "non-numbers"),
        ({"outputs": [tensor("digit", "INT64", "2", [1, 2])]}, 2, "shape"),
        ({"outputs": [tensor("p", "FP32", [1, 10], [float("nan")] * 10)]}, 1, "NaN"),
        ({"outputs": [tensor("p", "FP32", [1, 9], [0.1] * 9)]}, 1, "no output holds"),
        ({"outputs": [tensor("a", "INT64", [1], [1]), tensor("b", "INT32", [1], [2])]}, 1, "2 unnamed outputs"),
        ({"outputs": [tensor("digit", "INT64", [1], [3]), tensor("probabilities", "FP32", [1, 10], proba(7))]}, 1, "disagrees"),
        ({"outputs": [tensor("flag", "BOOL", [1], [True])]}, 1, "no output holds"),
    ],
)
def test_parse_v2_refuses_unknown_shapes(body: Any, batch_size: int, message: str) -> None:
    with pytest.raises(PredictorProtocolError, match=message):
        parse_v2(body, batch_size)


# -- the binary tensor data extension ------------------------------------------------


def test_binary_request_reads_back_as_the_same_batch_and_header() -> None:
    batch = np.random.default_rng(5).random((3, 28, 28), dtype=np.float32)
    body, json_length = encode_v2_binary(batch, request_id="r1")
    header = json.loads(body[:json_length])
    assert header == {"id": "r1", "inputs": [{"name": "image", "shape": [3, 28, 28], "datatype": "FP32",
                                              "parameters": {"binary_data_size": 3 * 784 * 4}}]}
    assert len(body) == json_length + 3 * 784 * 4
    read = read_binary_body(body, str(json_length), "inputs", error=InvalidInput)
    assert np.array_equal(read["inputs"][0]["data"].reshape(3, 28, 28), batch)


def test_binary_tensors_without_the_parameter_keep_their_json_data() -> None:
    header = json.dumps({"outputs": [{"name": "digit", "shape": [2], "datatype": "INT64", "data": [3, 4]},
                                     {"name": "probabilities", "shape": [2, 10], "datatype": "FP32",
                                      "parameters": {"binary_data_size": 80}}]}).encode()
    proba = np.full((2, 10), 0.1, dtype="<f4")
    body = read_binary_body(header + proba.tobytes(), str(len(header)), "outputs", error=PredictorProtocolError)
    assert body["outputs"][0]["data"] == [3, 4]
    assert [p.digit for p in parse_v2(body, 2)] == [3, 4]


def _binary(header: dict[str, Any], data: bytes) -> tuple[bytes, str]:
    text = json.dumps(header).encode()
    return text + data, str(len(text))


def _input(**fields: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "image", "shape": [1, 784], "datatype": "FP32", **fields}]}


@pytest.mark.parametrize(
    ("body", "length", "reason"),
    [
        (b'{"inputs": []}', "x1", "not a byte count"),
        (b'{"inputs": []}', "99", "is 99, but the body has 14 bytes"),
        (b'{"inputs": []}', "-1", "is -1"),
        (b'{"inputs": [}' + b"\0" * 8, "13", "not valid JSON"),
        (*_binary(_input(parameters={"binary_data_size": 3200}), b"\0" * 3136), "does not fit the 3136 bytes left"),
        (*_binary(_input(parameters={"binary_data_size": "3136"}), b"\0" * 3136), "binary_data_size '3136'"),
        (*_binary(_input(parameters={"binary_data_size": 3135}), b"\0" * 3135), "not a whole number of FP32 values"),
        (*_binary(_input(datatype="BF16", parameters={"binary_data_size": 8}), b"\0" * 8), "datatype 'BF16' is not supported"),
        (*_binary(_input(parameters={"binary_data_size": 3136}), b"\0" * 3140), "4 bytes after the last binary tensor"),
    ],
)
def test_malformed_binary_bodies_say_what_is_wrong(body: bytes, length: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        read_binary_body(body, length, "inputs", error=InvalidInput)
