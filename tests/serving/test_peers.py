"""The predictor client against third-party model servers serving the same model.

KServe's own ModelServer (v1 and v2) and MLServer (v2) run as child processes
from their own venvs (built by ``tests/serving/peers/setup_peers.sh``), each serving
streamapp's DigitModel through a runtime in ``tests/serving/peers/``. The client must
read their answers, whatever their shape, into the digits the model gives
in-process, and map their errors as it maps ours.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from streamapp.embedded.process import ManagedProcess, free_port
from streamapp.errors import PredictorUnavailable
from streamapp.serving.client import Prediction, PredictorClient

pytestmark = pytest.mark.peers

ROOT = Path(__file__).resolve().parents[2]
PEERS = Path(__file__).resolve().parent / "peers"
#: the peers load the bundled weights unless this names another file
MODEL_PATH = os.environ.get("STREAMAPP_PEER_MODEL_PATH")


def venv_python(name: str, program: str = "python") -> str:
    path = ROOT / name / "bin" / program
    if not path.exists():
        pytest.fail(f"{path} is missing: run `bash tests/serving/peers/setup_peers.sh` first")
    return str(path)


def wait_ready(server: ManagedProcess, url: str, timeout: float = 90.0) -> None:
    """Poll ``url`` until it answers 200 (the peers load the model before that)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server.check()
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{server.name} not ready at {url} within {timeout:.0f}s:\n{server.log_tail()}")


def peer_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONHOME"))}
    if MODEL_PATH:
        env["STREAMAPP_PEER_MODEL_PATH"] = MODEL_PATH
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def kserve_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    server = ManagedProcess(
        "kserve",
        [
            venv_python(".venv-kserve"),
            str(PEERS / "kserve_digits.py"),
            "--http_port", str(port),
            "--grpc_port", str(free_port()),
            "--enable_grpc", "false",
        ],
        log_path=tmp_path_factory.mktemp("kserve") / "kserve.log",
        env=peer_env(),
        cwd=ROOT,
    ).start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(server, f"{url}/v2/health/ready")
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mlserver_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("mlserver")
    port = free_port()
    settings = {
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        # inference in the server process: MLServer's worker pool needs uvloop<0.22
        "parallel_workers": 0,
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    (folder / "mnist").mkdir()
    model_settings = {"name": "mnist", "implementation": "mlserver_digits.DigitsRuntime", "parameters": {"version": "1"}}
    (folder / "mnist" / "model-settings.json").write_text(json.dumps(model_settings))
    server = ManagedProcess(
        "mlserver",
        [venv_python(".venv-mlserver", "mlserver"), "start", str(folder)],
        log_path=folder / "mlserver.log",
        env=peer_env(PYTHONPATH=str(PEERS)),
        cwd=folder,
    ).start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(server, f"{url}/v2/models/mnist/ready")
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def expected(sample_tensors: Any) -> np.ndarray:
    """The model's own probabilities, in-process: what every peer must agree with."""
    from streamapp.serving.model import DigitModel

    return DigitModel.load(MODEL_PATH).predict_proba(sample_tensors[0])


def predict(url: str, model: str, protocol: str, batch: np.ndarray) -> tuple[bool, list[Prediction]]:
    async def main() -> tuple[bool, list[Prediction]]:
        async with aiohttp.ClientSession() as session:
            client = PredictorClient(session, base_url=url, model_name=model, protocol=protocol, timeout=30)
            return await client.ready(), await client.predict(batch)

    return asyncio.run(main())


def check(predictions: list[Prediction], expected: np.ndarray, labels: list[int], *, probabilities: bool) -> None:
    assert [p.digit for p in predictions] == expected.argmax(axis=1).tolist()
    correct = sum(p.digit == label for p, label in zip(predictions, labels, strict=True))
    assert correct >= 0.95 * len(labels), f"{correct}/{len(labels)} correct"
    if probabilities:
        assert np.allclose([p.probabilities for p in predictions], expected, atol=1e-5)
    else:
        assert all(p.probabilities is None for p in predictions)


@pytest.mark.parametrize(
    ("protocol", "model", "probabilities"),
    [
        ("v1", "mnist", True),  # {"predictions": [{"classes": 7, "predictions": [...]}]}
        ("v1", "mnist-classes", False),  # {"predictions": [7, 2, ...]}
        ("v2", "mnist", True),  # digit INT64 [B] + probabilities FP32 [B, 10]
        ("v2", "mnist-classes", False),  # output-0 INT64 [B]
    ],
)
def test_kserve_modelserver(kserve_url: str, sample_tensors: Any, expected: np.ndarray, protocol: str, model: str, probabilities: bool) -> None:
    batch, labels = sample_tensors
    ready, predictions = predict(kserve_url, model, protocol, batch)
    assert ready
    check(predictions, expected, labels, probabilities=probabilities)


def test_mlserver(mlserver_url: str, sample_tensors: Any, expected: np.ndarray) -> None:
    # digit INT64 [B, 1] + probabilities FP32 [B, 10]; readiness is 200 with an empty body
    batch, labels = sample_tensors
    ready, predictions = predict(mlserver_url, "mnist", "v2", batch)
    assert ready
    check(predictions, expected, labels, probabilities=True)


def test_single_images_too(kserve_url: str, mlserver_url: str, sample_tensors: Any, expected: np.ndarray) -> None:
    batch = sample_tensors[0]
    for url, protocol in ((kserve_url, "v1"), (kserve_url, "v2"), (mlserver_url, "v2")):
        _, predictions = predict(url, "mnist", protocol, batch[:1])
        assert [p.digit for p in predictions] == [int(expected[0].argmax())]


@pytest.mark.parametrize(("peer", "protocol"), [("kserve", "v1"), ("kserve", "v2"), ("mlserver", "v2")])
def test_unknown_model_on_a_peer_is_unavailable_not_rejected(request: pytest.FixtureRequest, peer: str, protocol: str) -> None:
    url = request.getfixturevalue(f"{peer}_url")
    with pytest.raises(PredictorUnavailable, match="404"):
        predict(url, "no-such-model", protocol, np.zeros((1, 28, 28), np.float32))


@pytest.mark.parametrize(("peer", "takes_binary"), [("kserve", True), ("mlserver", False)])
def test_binary_tensor_data_where_the_peer_takes_it_json_where_not(request: pytest.FixtureRequest, peer: str,
                                                                    takes_binary: bool, sample_tensors: Any,
                                                                    expected: np.ndarray) -> None:
    url = request.getfixturevalue(f"{peer}_url")
    batch, labels = sample_tensors

    async def main() -> tuple[bool | None, list[Prediction]]:
        async with aiohttp.ClientSession() as session:
            client = PredictorClient(session, base_url=url, model_name="mnist", protocol="v2", timeout=30)
            predictions = await client.predict(batch)
            return client.binary, predictions

    binary, predictions = asyncio.run(main())
    assert binary is takes_binary
    check(predictions, expected, labels, probabilities=True)
