"""The predictor client against real servers (its encoders and parsers are in
``test_protocol.py``).

The client is tested against our own model server on a real port, against a port
nothing listens on, and against a tiny real aiohttp server that answers what
a test tells it to (errors, garbage, slowness) to exercise the error mapping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from streamapp.embedded.process import free_port
from streamapp.errors import PredictorProtocolError, PredictorRejected, PredictorUnavailable
from streamapp.serving import server as modelserver
from streamapp.serving.client import PredictorClient
from streamapp.serving.protocol import BINARY_HEADER, Prediction

ONE_HOT_7 = [0.0] * 7 + [1.0] + [0.0] * 2


def proba(digit: int, top: float = 0.91) -> list[float]:
    rest = (1.0 - top) / 9
    return [top if i == digit else rest for i in range(10)]


# -- the client against real servers ------------------------------------------------


@asynccontextmanager
async def serving(app: web.Application | Awaitable[web.Application]) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port; yield its base URL."""
    runner = web.AppRunner(await app if not isinstance(app, web.Application) else app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def answering(status: int, body: bytes | str, *, delay: float = 0.0) -> web.Application:
    """A tiny real server answering every request with ``status`` and ``body``."""

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=status, body=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def run(scenario: Callable[[aiohttp.ClientSession], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with aiohttp.ClientSession() as session:
            return await scenario(session)

    return asyncio.run(main())


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_client_predicts_real_samples_with_our_server(protocol: str, digit_model: Any, sample_tensors: Any) -> None:
    batch, labels = sample_tensors

    async def scenario(session: aiohttp.ClientSession) -> list[Prediction]:
        async with serving(modelserver.create_app(digit_model)) as url:
            client = PredictorClient(session, base_url=url, model_name="mnist", protocol=protocol)
            assert await client.ready()
            return await client.predict(batch)

    predictions = run(scenario)
    assert len(predictions) == len(labels)
    correct = sum(p.digit == label for p, label in zip(predictions, labels, strict=True))
    assert correct >= 0.95 * len(labels), f"{correct}/{len(labels)} correct"
    # the same model in-process: the wire must not change a single answer
    expected = digit_model.predict_proba(batch)
    assert [p.digit for p in predictions] == expected.argmax(axis=1).tolist()
    assert all(p.probabilities is not None for p in predictions)
    assert np.allclose([p.probabilities for p in predictions], expected, atol=1e-6)


def test_client_400_is_rejected_with_the_servers_reason(digit_model: Any) -> None:
    too_bright = np.full((2, 28, 28), 255.0, dtype=np.float32)  # 0-255 pixels: the classic mistake

    async def scenario(session: aiohttp.ClientSession) -> None:
        async with serving(modelserver.create_app(digit_model)) as url:
            for protocol in ("v1", "v2"):
                client = PredictorClient(session, base_url=url, model_name="mnist", protocol=protocol)
                with pytest.raises(PredictorRejected, match=r"400 .*must lie in \[0, 1\]"):
                    await client.predict(too_bright)

    run(scenario)


def test_client_unknown_model_waits_instead_of_rejecting(digit_model: Any) -> None:
    # a 404 means a wrong model name or a model not loaded yet: retry, never dead-letter
    async def scenario(session: aiohttp.ClientSession) -> None:
        async with serving(modelserver.create_app(digit_model)) as url:
            client = PredictorClient(session, base_url=url, model_name="other", protocol="v2")
            assert not await client.ready()
            with pytest.raises(PredictorUnavailable, match="404"):
                await client.predict(np.zeros((1, 28, 28), np.float32))

    run(scenario)


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_client_batch_over_the_servers_limits_is_rejected_not_retried(protocol: str, digit_model: Any) -> None:
    # rejected, the pipeline splits the batch; "unavailable" would retry it forever
    batch = np.random.default_rng(3).random((24, 28, 28), dtype=np.float32)  # 75 KB even as binary v2

    async def scenario(session: aiohttp.ClientSession) -> None:
        async with serving(modelserver.create_app(digit_model, max_body_bytes=50_000)) as url:
            client = PredictorClient(session, base_url=url, model_name="mnist", protocol=protocol)
            with pytest.raises(PredictorRejected, match=r"413 .*larger than the limit of 50000 bytes"):
                await client.predict(batch)
            assert len(await client.predict(batch[:2])) == 2
        async with serving(modelserver.create_app(digit_model, max_batch=8)) as url:
            client = PredictorClient(session, base_url=url, model_name="mnist", protocol=protocol)
            with pytest.raises(PredictorRejected, match=r"400 .*holds 12 images, more than the limit of 8"):
                await client.predict(batch[:12])

    run(scenario)


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_client_server_down_is_unavailable(protocol: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    async def scenario(session: aiohttp.ClientSession) -> None:
        client = PredictorClient(session, base_url=url, model_name="mnist", protocol=protocol, timeout=2.0)
        assert not await client.ready()
        with pytest.raises(PredictorUnavailable, match="ClientConnectorError"):
            await client.predict(np.zeros((1, 28, 28), np.float32))

    run(scenario)


@pytest.mark.parametrize(
    ("status", "body", "error", "message"),
    [
        (500, '{"error": "CUDA out of memory"}', PredictorUnavailable, "500 .*CUDA out of memory"),
        (503, "", PredictorUnavailable, r"503 .*\(empty body\)"),
        (429, '{"error": "slow down"}', PredictorUnavailable, "429"),
        (422, '{"detail": [{"msg": "field required"}]}', PredictorRejected, "422 .*field required"),
        (413, "too big", PredictorRejected, "413 .*too big"),
        (200, "<html>hello</html>", PredictorProtocolError, "not JSON"),
        (200, '{"predictions": [1, 2, 3]}', PredictorProtocolError, "expected"),
        (200, '{"outputs": [{"name": "digit", "datatype": "INT64", "shape": [1], "data": [11]}]}', PredictorProtocolError, "not a digit"),
        (200, '{"id": "someone-else", "outputs": [{"name": "digit", "datatype": "INT64", "shape": [1], "data": [1]}]}', PredictorProtocolError, "is not the request id"),
    ],
)
def test_client_maps_each_answer_to_its_error(status: int, body: str, error: type[Exception], message: str) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        async with serving(answering(status, body)) as url:
            client = PredictorClient(session, base_url=url, model_name="mnist", protocol="v2")
            with pytest.raises(error, match=message):
                await client.predict(np.zeros((1, 28, 28), np.float32))

    run(scenario)


def test_client_v1_garbage_is_a_protocol_error() -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        async with serving(answering(200, '{"predictions": [[0.5, 0.5]]}')) as url:
            client = PredictorClient(session, base_url=url, model_name="mnist", protocol="v1")
            with pytest.raises(PredictorProtocolError, match="not a digit"):
                await client.predict(np.zeros((1, 28, 28), np.float32))

    run(scenario)


def test_client_timeout_is_unavailable() -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        async with serving(answering(200, '{"predictions": [1]}', delay=2.0)) as url:
            client = PredictorClient(session, base_url=url, model_name="mnist", protocol="v1", timeout=0.2)
            with pytest.raises(PredictorUnavailable, match="Timeout"):
                await client.predict(np.zeros((1, 28, 28), np.float32))

    run(scenario)


@pytest.mark.parametrize(
    ("status", "body", "ready"),
    [
        (200, "", True),  # MLServer: 200 with an empty body
        (200, '{"name": "mnist", "ready": true}', True),  # KServe and ours
        (200, '{"name": "mnist", "ready": false}', False),
        (503, '{"error": "Model with name mnist is not ready."}', False),
    ],
)
def test_client_ready_reads_every_readiness_answer(status: int, body: str, ready: bool) -> None:
    async def scenario(session: aiohttp.ClientSession) -> bool:
        async with serving(answering(status, body)) as url:
            return await PredictorClient(session, base_url=url, model_name="mnist").ready()

    assert run(scenario) is ready


def test_client_empty_batch_sends_nothing() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # would fail if a request were made

    async def scenario(session: aiohttp.ClientSession) -> list[Prediction]:
        return await PredictorClient(session, base_url=url, model_name="mnist").predict(np.zeros((0, 28, 28), np.float32))

    assert run(scenario) == []


# -- binary tensor data: asked once, JSON where refused -----------------------------


async def binary_refused_with(status: int, digit_model: Any, seen: list[bool]) -> web.Application:
    """Our model server, made to answer ``status`` to binary tensor data (as a JSON-only server does)."""

    @web.middleware
    async def refuse(request: web.Request, handler: Any) -> web.StreamResponse:
        binary = BINARY_HEADER in request.headers
        seen.append(binary)
        if binary:
            await request.read()
            return web.json_response({"error": "expected a JSON body"}, status=status)
        return await handler(request)

    app = await modelserver.create_app(digit_model)
    app.middlewares.append(refuse)
    return app


def test_auto_sends_binary_to_a_server_that_takes_it_with_the_same_answers(digit_model: Any, sample_tensors: Any) -> None:
    batch = sample_tensors[0][:16]

    async def scenario(session: aiohttp.ClientSession) -> tuple[list[Prediction], list[Prediction]]:
        async with serving(modelserver.create_app(digit_model)) as url:
            auto = PredictorClient(session, base_url=url, model_name="mnist")
            text = PredictorClient(session, base_url=url, model_name="mnist", binary="off")
            assert auto.binary is None and text.binary is False
            answers = await auto.predict(batch), await text.predict(batch)
            assert auto.binary is True and text.binary is False
            return answers

    binary, text = run(scenario)
    assert binary == text
    assert [p.digit for p in binary] == digit_model.predict_proba(batch).argmax(axis=1).tolist()


@pytest.mark.parametrize("status", [400, 415, 422, 500])
def test_auto_falls_back_to_json_for_good_when_binary_is_refused(status: int, digit_model: Any, sample_tensors: Any) -> None:
    batch = sample_tensors[0][:4]
    seen: list[bool] = []

    async def scenario(session: aiohttp.ClientSession) -> list[Prediction]:
        async with serving(binary_refused_with(status, digit_model, seen)) as url:
            client = PredictorClient(session, base_url=url, model_name="mnist")
            first = await client.predict(batch)
            assert client.binary is False
            assert await client.predict(batch) == first
            return first

    predictions = run(scenario)
    assert [p.digit for p in predictions] == digit_model.predict_proba(batch).argmax(axis=1).tolist()
    # one binary probe; after it (and the JSON check of a 5xx) only JSON
    assert seen[0] is True and seen.count(True) == 1


def test_auto_decides_nothing_while_the_server_is_down(digit_model: Any) -> None:
    port = free_port()

    async def scenario(session: aiohttp.ClientSession) -> bool | None:
        client = PredictorClient(session, base_url=f"http://127.0.0.1:{port}", model_name="mnist", timeout=2.0)
        with pytest.raises(PredictorUnavailable):
            await client.predict(np.zeros((1, 28, 28), np.float32))
        assert client.binary is None  # undecided: asked again on the next call
        runner = web.AppRunner(await modelserver.create_app(digit_model), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            await client.predict(np.zeros((2, 28, 28), np.float32))
        finally:
            await runner.cleanup()
        return client.binary

    assert run(scenario) is True


def test_binary_on_and_off_are_obeyed_and_v1_never_sends_binary(digit_model: Any) -> None:
    seen: list[bool] = []
    batch = np.zeros((2, 28, 28), np.float32)

    async def scenario(session: aiohttp.ClientSession) -> None:
        async with serving(binary_refused_with(422, digit_model, seen)) as url:
            with pytest.raises(PredictorRejected, match="422"):
                await PredictorClient(session, base_url=url, model_name="mnist", binary="on").predict(batch)
            await PredictorClient(session, base_url=url, model_name="mnist", binary="off").predict(batch)
            v1 = PredictorClient(session, base_url=url, model_name="mnist", protocol="v1")
            await v1.predict(batch)
            assert v1.binary is False

    run(scenario)
    assert seen == [True, False, False]
    with pytest.raises(ValueError, match="binary='yes'"):
        PredictorClient(None, base_url="http://x", model_name="m", binary="yes")  # type: ignore[arg-type]
