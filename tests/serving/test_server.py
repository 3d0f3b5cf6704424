"""The model server over HTTP: KServe v1, Open Inference Protocol v2, every error.

Every test talks to a real server on a loopback port serving the real bundled
DigitModel; where a test counts forward passes, it wraps that model in a
counter and the counter passes every call through.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from streamapp.embedded.process import ManagedProcess, free_port
from streamapp.serving import server as modelserver
from streamapp.serving.protocol import encode_v2_binary

V1 = "/v1/models/mnist:predict"
V2 = "/v2/models/mnist/infer"


class Counting:
    """The real model, counting its forward passes (and optionally holding them)."""

    def __init__(self, model: Any, hold: threading.Event | None = None) -> None:
        self.model = model
        self.name = model.name
        self.version = model.version
        self.calls: list[int] = []
        self.hold = hold

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(len(batch))
        if self.hold is not None:
            assert self.hold.wait(10), "the test never released the forward pass"
        return self.model.predict_proba(batch)


def against(model: Any, scenario: Callable[[TestClient], Awaitable[Any]], **limits: Any) -> Any:
    """Run ``scenario`` with a client of a real server (loopback port) serving ``model``."""

    async def main() -> Any:
        async with TestClient(TestServer(await modelserver.create_app(model, **limits))) as client:
            return await scenario(client)

    return asyncio.run(main())


async def post(client: TestClient, path: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with client.post(path, data=data, headers={"Content-Type": "application/json"}) as response:
        return response.status, await response.json()


async def get(client: TestClient, path: str) -> tuple[int, Any]:
    async with client.get(path) as response:
        return response.status, await response.json()


def v2_body(batch: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "image", "shape": list(batch.shape), "datatype": "FP32", "data": batch.ravel().tolist()}], **extra}


# -- v1 ---------------------------------------------------------------------------


def test_v1_predicts_real_samples_in_the_kserve_sample_shape(digit_model: Any, sample_tensors: Any) -> None:
    batch, labels = sample_tensors
    status, body = against(digit_model, lambda c: post(c, V1, {"instances": batch.tolist()}))
    assert status == 200
    assert list(body) == ["predictions"]
    assert len(body["predictions"]) == len(labels)
    for item in body["predictions"]:
        assert set(item) == {"classes", "predictions"}
        assert isinstance(item["classes"], int) and len(item["predictions"]) == 10
        assert abs(sum(item["predictions"]) - 1.0) < 1e-4
        assert item["classes"] == int(np.argmax(item["predictions"]))
    correct = sum(item["classes"] == label for item, label in zip(body["predictions"], labels, strict=True))
    assert correct >= 0.95 * len(labels), f"{correct}/{len(labels)}"
    expected = digit_model.predict_proba(batch)
    assert np.allclose([item["predictions"] for item in body["predictions"]], expected, atol=1e-6)


def test_v1_takes_flat_instances_too(digit_model: Any, sample_tensors: Any) -> None:
    batch = sample_tensors[0][:5]

    async def scenario(client: TestClient) -> None:
        nested = await post(client, V1, {"instances": batch.tolist()})
        flat = await post(client, V1, {"instances": batch.reshape(5, 784).tolist()})
        assert nested == flat
        assert nested[0] == 200

    against(digit_model, scenario)


def test_v1_models_and_readiness(digit_model: Any) -> None:
    async def scenario(client: TestClient) -> None:
        assert await get(client, "/v1/models") == (200, {"models": ["mnist"]})
        assert await get(client, "/v1/models/mnist") == (200, {"name": "mnist", "ready": True})

    against(digit_model, scenario)


# -- v2 ---------------------------------------------------------------------------


def test_v2_infers_real_samples_and_echoes_the_id(digit_model: Any, sample_tensors: Any) -> None:
    batch, labels = sample_tensors
    status, body = against(digit_model, lambda c: post(c, V2, v2_body(batch, id="batch-17")))
    assert status == 200
    assert body["id"] == "batch-17"
    assert body["model_name"] == "mnist" and body["model_version"] == digit_model.version
    digit, probabilities = body["outputs"]
    assert digit["name"] == "digit" and digit["datatype"] == "INT64" and digit["shape"] == [len(labels)]
    assert probabilities["name"] == "probabilities" and probabilities["datatype"] == "FP32"
    assert probabilities["shape"] == [len(labels), 10] and len(probabilities["data"]) == 10 * len(labels)
    expected = digit_model.predict_proba(batch)
    assert digit["data"] == expected.argmax(axis=1).tolist()
    assert np.allclose(np.reshape(probabilities["data"], (-1, 10)), expected, atol=1e-6)
    correct = sum(d == label for d, label in zip(digit["data"], labels, strict=True))
    assert correct >= 0.95 * len(labels), f"{correct}/{len(labels)}"


def test_v2_accepts_every_layout_the_spec_allows(digit_model: Any, sample_tensors: Any) -> None:
    batch = sample_tensors[0][:4]
    flat = batch.reshape(4, 784)
    layouts = [
        v2_body(batch),  # [B, 28, 28], flat data
        v2_body(flat),  # [B, 784], flat data
        {"inputs": [{"name": "x", "shape": [4, 28, 28], "datatype": "FP32", "data": batch.tolist()}]},  # nested
        {"inputs": [{"name": "x", "shape": [4, 784], "datatype": "FP64", "data": flat.tolist()}]},
    ]

    async def scenario(client: TestClient) -> list[list[int]]:
        answers = [await post(client, V2, body) for body in layouts]
        assert all(status == 200 for status, _ in answers)
        return [body["outputs"][0]["data"] for _, body in answers]

    digits = against(digit_model, scenario)
    assert all(d == digits[0] for d in digits)


def test_v2_makes_an_id_when_none_is_sent(digit_model: Any) -> None:
    status, body = against(digit_model, lambda c: post(c, V2, v2_body(np.zeros((1, 28, 28), np.float32))))
    assert status == 200
    uuid.UUID(body["id"])


def test_v2_returns_only_the_requested_outputs(digit_model: Any) -> None:
    body = v2_body(np.zeros((2, 28, 28), np.float32), outputs=[{"name": "probabilities"}])
    status, answer = against(digit_model, lambda c: post(c, V2, body))
    assert status == 200
    assert [o["name"] for o in answer["outputs"]] == ["probabilities"]


def test_v2_versioned_routes(digit_model: Any) -> None:
    version = digit_model.version

    async def scenario(client: TestClient) -> None:
        status, body = await post(client, f"/v2/models/mnist/versions/{version}/infer", v2_body(np.zeros((1, 28, 28), np.float32)))
        assert status == 200 and body["model_version"] == version
        assert (await get(client, f"/v2/models/mnist/versions/{version}/ready"))[0] == 200
        status, body = await get(client, "/v2/models/mnist/versions/nope/ready")
        assert status == 404 and "no version 'nope'" in body["error"]

    against(digit_model, scenario)


def test_v2_health_and_metadata(digit_model: Any) -> None:
    async def scenario(client: TestClient) -> None:
        assert await get(client, "/v2/health/live") == (200, {"live": True})
        assert await get(client, "/v2/health/ready") == (200, {"ready": True})
        assert await get(client, "/v2/models/mnist/ready") == (200, {"name": "mnist", "ready": True})
        status, server = await get(client, "/v2")
        assert status == 200 and set(server) == {"name", "version", "extensions"}
        status, meta = await get(client, "/v2/models/mnist")
        assert status == 200
        assert meta["name"] == "mnist" and meta["versions"] == [digit_model.version]
        assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 28, 28]}]
        assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
            ("digit", "INT64", [-1]),
            ("probabilities", "FP32", [-1, 10]),
        ]

    against(digit_model, scenario)


# -- what is refused ------------------------------------------------------------------


def v2_tensor(**fields: Any) -> dict[str, Any]:
    tensor = {"name": "image", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}
    tensor.update(fields)
    return {"inputs": [tensor]}


ZEROS_V1 = [[0.0] * 784]
BAD_REQUESTS = [
    # (path, body, words the error must say)
    (V1, b"not json", "not valid JSON"),
    (V2, b"{", "not valid JSON"),
    (V1, b"\xff\xfe", "not valid JSON"),
    (V1, b'{"instances": [[NaN]]}', "NaN is not a valid JSON number"),
    (V2, b'{"inputs": [{"name": "i", "shape": [1], "datatype": "FP32", "data": [Infinity]}]}', "Infinity"),
    (V1, b'{"instances": [[' + b"1e999," * 783 + b"0]]}", "not a finite float32"),
    (V1, {"instances": [[1e39] * 784]}, "not a finite float32"),  # past float32's range
    (V1, [1, 2], 'with "instances"'),
    (V1, {"inputs": ZEROS_V1}, 'with "instances"'),
    (V1, {"instances": "zeros"}, "must be a list"),
    (V1, {"instances": []}, "shape [0]"),
    (V1, {"instances": [[0.0] * 2]}, "shape [1, 2], expected [B, 784] or [B, 28, 28]"),
    (V1, {"instances": [[0.0] * 785]}, "shape [1, 785]"),
    (V1, {"instances": [[0.0] * 784, [0.0] * 783]}, "ragged"),
    (V1, {"instances": [["0.5"] * 784]}, "only numbers (got strings)"),
    (V1, {"instances": [[True] * 784]}, "only numbers (got booleans)"),
    (V1, {"instances": [[None] * 784]}, "only numbers"),
    (V1, {"instances": [[255.0] * 784]}, "must lie in [0, 1], found [255, 255] (divide 0-255 pixels by 255)"),
    (V1, {"instances": [[-0.5] * 784]}, "must lie in [0, 1], found [-0.5, -0.5]"),
    (V2, {"inputs": []}, "exactly one tensor"),
    (V2, {"inputs": [v2_tensor()["inputs"][0]] * 2}, "exactly one tensor"),
    (V2, {"instances": ZEROS_V1}, "exactly one tensor"),
    (V2, [], "must be a JSON object"),
    (V2, {"inputs": [{"name": "image", "data": [0.0] * 784}]}, "lacks shape, datatype"),
    (V2, v2_tensor(datatype="INT64"), "datatype 'INT64' is not supported"),
    (V2, v2_tensor(datatype="BYTES", data=["x"] * 784), "datatype 'BYTES' is not supported"),
    (V2, v2_tensor(shape=[1, 785]), "holds 784 values but shape [1, 785] needs 785"),
    (V2, v2_tensor(data=[0.0] * 700), "holds 700 values"),
    (V2, v2_tensor(shape=[2, 392]), "has shape [2, 392], expected [B, 784] or [B, 28, 28]"),
    (V2, v2_tensor(shape=[1, 28, 28], data=[[0.0] * 784]), "nested as [1, 784], not as its shape [1, 28, 28]"),
    (V2, v2_tensor(shape=[1, -784]), "non-negative integers"),
    (V2, v2_tensor(shape="1x784"), "non-negative integers"),
    (V2, v2_tensor(shape=[0, 784], data=[]), "holds no images"),
    (V2, v2_tensor(data=[2.0] * 784), "must lie in [0, 1]"),
    (V2, v2_tensor(data=[{"v": 1}] * 784), "only numbers"),
    (V2, {**v2_tensor(), "id": 17}, '"id" must be a string'),
    (V2, {**v2_tensor(), "outputs": [{"name": "logits"}]}, "unknown outputs ['logits']"),
    (V2, {**v2_tensor(), "outputs": "digit"}, '"outputs" must be a list'),
]


@pytest.mark.parametrize(("path", "body", "words"), BAD_REQUESTS, ids=[f"{i}-{w[:30]}" for i, (_, _, w) in enumerate(BAD_REQUESTS)])
def test_bad_requests_get_400_saying_what_is_wrong(digit_model: Any, path: str, body: Any, words: str) -> None:
    counting = Counting(digit_model)
    status, answer = against(counting, lambda c: post(c, path, body))
    assert status == 400
    assert words in answer["error"]
    assert counting.calls == []  # refused before any model work


def test_the_server_keeps_serving_after_every_bad_request(digit_model: Any) -> None:
    async def scenario(client: TestClient) -> None:
        for path, body, _ in BAD_REQUESTS:
            assert (await post(client, path, body))[0] == 400
        assert (await post(client, V1, {"instances": ZEROS_V1}))[0] == 200
        assert (await get(client, "/v2/health/ready"))[0] == 200

    against(digit_model, scenario)


def test_too_many_images_are_refused(digit_model: Any) -> None:
    counting = Counting(digit_model)

    async def scenario(client: TestClient) -> None:
        status, body = await post(client, V1, {"instances": [[0.0] * 784] * 5})
        assert status == 400 and "holds 5 images, more than the limit of 4" in body["error"]
        status, body = await post(client, V2, v2_body(np.zeros((5, 784), np.float32)))
        assert status == 400 and "holds 5 images, more than the limit of 4" in body["error"]
        status, body = await post(client, V2, v2_body(np.zeros((4, 784), np.float32)))
        assert status == 200

    against(counting, scenario, max_batch=4)
    assert counting.calls == [4]


def test_bodies_over_the_byte_limit_get_413(digit_model: Any) -> None:
    async def scenario(client: TestClient) -> None:
        for path in (V1, V2):
            status, body = await post(client, path, b" " * 20_001)
            assert status == 413
            assert body == {"error": "body is larger than the limit of 20000 bytes"}
        assert (await post(client, V1, {"instances": ZEROS_V1}))[0] == 200

    against(digit_model, scenario, max_body_bytes=20_000)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/models/other:predict"),
        ("GET", "/v1/models/other"),
        ("POST", "/v2/models/other/infer"),
        ("GET", "/v2/models/other"),
        ("GET", "/v2/models/other/ready"),
        ("GET", "/v3/anything"),
        ("GET", "/"),
    ],
)
def test_unknown_models_and_routes_get_404(digit_model: Any, method: str, path: str) -> None:
    async def scenario(client: TestClient) -> tuple[int, Any]:
        async with client.request(method, path, data=json.dumps({"instances": ZEROS_V1})) as response:
            return response.status, await response.json()

    status, body = against(digit_model, scenario)
    assert status == 404
    assert body["error"]


def test_wrong_method_gets_405_as_json(digit_model: Any) -> None:
    async def scenario(client: TestClient) -> tuple[int, Any]:
        async with client.get(V2) as response:
            return response.status, await response.json()

    assert against(digit_model, scenario) == (405, {"error": "Method Not Allowed"})


def test_a_model_bug_is_a_500_and_the_server_lives_on(digit_model: Any) -> None:
    class Broken(Counting):
        def predict_proba(self, batch: np.ndarray) -> np.ndarray:
            raise RuntimeError("a bug")

    async def scenario(client: TestClient) -> None:
        assert await post(client, V1, {"instances": ZEROS_V1}) == (500, {"error": "internal server error"})
        assert (await get(client, "/v2/health/live"))[0] == 200

    against(Broken(digit_model), scenario)


# -- batching and the event loop ----------------------------------------------------


def test_a_batch_of_b_images_costs_one_forward_pass(digit_model: Any, sample_tensors: Any) -> None:
    batch = sample_tensors[0][:32]
    counting = Counting(digit_model)

    async def scenario(client: TestClient) -> None:
        assert (await post(client, V1, {"instances": batch.tolist()}))[0] == 200
        assert (await post(client, V2, v2_body(batch)))[0] == 200

    against(counting, scenario)
    assert counting.calls == [32, 32]


def test_health_checks_answer_while_a_forward_pass_runs(digit_model: Any) -> None:
    # the forward pass waits until the health check has been answered: if it ran
    # on the event loop, the health check could never be answered
    hold = threading.Event()
    counting = Counting(digit_model, hold=hold)

    async def scenario(client: TestClient) -> None:
        infer = asyncio.create_task(post(client, V2, v2_body(np.zeros((8, 784), np.float32))))
        while not counting.calls:
            await asyncio.sleep(0.01)
        assert await asyncio.wait_for(get(client, "/v2/health/ready"), 5) == (200, {"ready": True})
        assert not infer.done()
        hold.set()
        assert (await infer)[0] == 200

    against(counting, scenario)


# -- the command ----------------------------------------------------------------------


def test_main_serves_until_sigterm(tmp_path: Path, sample_tensors: Any) -> None:
    port = free_port()
    code = "import sys; from streamapp.serving.server import main; main(sys.argv[1:])"
    server = ManagedProcess(
        "modelserver",
        [sys.executable, "-c", code, "--host", "127.0.0.1", "--port", str(port), "--model-name", "digits"],
        log_path=tmp_path / "modelserver.log",
    ).start()
    try:
        server.wait_port("127.0.0.1", port, timeout=30)
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/v2/models/digits/ready", timeout=5) as response:  # noqa: S310 (loopback)
            assert json.loads(response.read()) == {"name": "digits", "ready": True}
        batch, labels = sample_tensors
        request = urllib.request.Request(  # noqa: S310 (loopback)
            f"{base}/v1/models/digits:predict",
            data=json.dumps({"instances": batch[:10].tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
            digits = [p["classes"] for p in json.loads(response.read())["predictions"]]
        assert sum(d == label for d, label in zip(digits, labels[:10], strict=False)) >= 9
        server.signal(signal.SIGTERM)
        assert server.proc is not None and server.proc.wait(10) == 0
        assert "serving model digits" in server.log_path.read_text()
    finally:
        server.stop()



def test_fault_injection_fails_only_batches_holding_the_chosen_image():
    from streamapp.serving.server import FailingOn

    class Echo:
        name, version = "mnist", "1"

        def predict_proba(self, batch):
            return np.full((len(batch), 10), 0.1, dtype=np.float32)

    model = FailingOn(Echo(), 0.5)
    assert model.predict_proba(np.zeros((2, 28, 28), np.float32)).shape == (2, 10)
    mixed = np.stack([np.zeros((28, 28), np.float32), np.full((28, 28), 0.5, np.float32)])
    with pytest.raises(RuntimeError, match="injected fault"):
        model.predict_proba(mixed)
    almost = np.full((1, 28, 28), 0.5, np.float32)
    almost[0, 0, 0] = 0.0
    assert model.predict_proba(almost).shape == (1, 10)


# -- v2 with binary tensor data -----------------------------------------------------


async def post_binary(client: TestClient, path: str, body: bytes, json_length: int | str) -> tuple[int, Any]:
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(json_length)}
    async with client.post(path, data=body, headers=headers) as response:
        return response.status, await response.json()


def test_v2_binary_input_gives_the_json_answer(digit_model: Any, sample_tensors: Any) -> None:
    batch = sample_tensors[0][:8]

    async def scenario(client: TestClient) -> tuple[Any, Any]:
        body, json_length = encode_v2_binary(batch, request_id="bin-1")
        status, binary = await post_binary(client, "/v2/models/mnist/infer", body, json_length)
        assert status == 200, binary
        status, text = await post(client, "/v2/models/mnist/infer", v2_body(batch, id="bin-1"))
        assert status == 200, text
        return binary, text

    binary, text = against(digit_model, scenario)
    assert binary == text  # the same digits and probabilities, whichever way the input came
    assert binary["id"] == "bin-1"


def test_v2_binary_fp64_input_is_read_too(digit_model: Any, sample_tensors: Any) -> None:
    batch = sample_tensors[0][:2].astype("<f8")
    header = json.dumps({"inputs": [{"name": "image", "shape": [2, 784], "datatype": "FP64",
                                     "parameters": {"binary_data_size": batch.nbytes}}]}).encode()

    async def scenario(client: TestClient) -> tuple[int, Any]:
        return await post_binary(client, "/v2/models/mnist/infer", header + batch.tobytes(), len(header))

    status, answer = against(digit_model, scenario)
    assert status == 200
    assert answer["outputs"][0]["data"] == digit_model.predict_proba(sample_tensors[0][:2]).argmax(axis=1).tolist()


@pytest.mark.parametrize(
    ("cut", "length", "reason"),
    [
        (0, "abc", "not a byte count"),
        (100, None, "bytes left"),  # the tensor is cut short
        (0, 10**6, "but the body has"),
    ],
)
def test_v2_malformed_binary_is_400_with_the_reason(digit_model: Any, cut: int, length: Any, reason: str) -> None:
    body, json_length = encode_v2_binary(np.zeros((1, 28, 28), np.float32))

    async def scenario(client: TestClient) -> tuple[int, Any]:
        return await post_binary(client, "/v2/models/mnist/infer", body[:len(body) - cut],
                                 json_length if length is None else length)

    status, answer = against(digit_model, scenario)
    assert status == 400 and reason in answer["error"]


def test_v2_server_metadata_names_the_binary_extension(digit_model: Any) -> None:
    status, body = against(digit_model, lambda client: get(client, "/v2"))
    assert status == 200 and "binary_tensor_data" in body["extensions"]


# -- metrics ------------------------------------------------------------------------


def samples_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_requests_by_protocol_and_status_and_batch_sizes(digit_model: Any) -> None:
    batch = np.zeros((3, 28, 28), np.float32)

    async def scenario(client: TestClient) -> tuple[str, str]:
        assert (await post(client, "/v2/models/mnist/infer", v2_body(batch)))[0] == 200
        body, json_length = encode_v2_binary(batch)
        assert (await post_binary(client, "/v2/models/mnist/infer", body, json_length))[0] == 200
        assert (await post(client, "/v1/models/mnist:predict", {"instances": batch.tolist()}))[0] == 200
        assert (await post(client, "/v2/models/mnist/infer", {"inputs": []}))[0] == 400
        async with client.get("/metrics") as response:
            return response.headers["Content-Type"], await response.text()

    content_type, text = against(digit_model, scenario)
    assert content_type.startswith("text/plain")
    got = samples_of(text)
    assert got[("streamapp_predictor_requests_total", (("code", "200"), ("protocol", "v2")))] == 2
    assert got[("streamapp_predictor_requests_total", (("code", "400"), ("protocol", "v2")))] == 1
    assert got[("streamapp_predictor_requests_total", (("code", "200"), ("protocol", "v1")))] == 1
    assert got[("streamapp_predictor_request_seconds_count", (("protocol", "v2"),))] == 3
    assert got[("streamapp_predictor_batch_size_count", ())] == 3  # the 400 never reached the model
    assert got[("streamapp_predictor_batch_size_sum", ())] == 9
    for name in ("streamapp_predictor_requests", "streamapp_predictor_request_seconds", "streamapp_predictor_batch_size"):
        assert f"# HELP {name}" in text
