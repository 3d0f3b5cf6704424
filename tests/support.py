"""What the tests share besides fixtures: starting a stack, and clients that look into it.

Imported by test modules (``from tests.support import ...``); the fixtures
built on it are in ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamapp.embedded.broker import topic_partitions
from streamapp.embedded.process import free_port
from streamapp.embedded.stack import Stack, StackConfig

#: limits the session stack's workers run with, so "too large" inputs stay small
#: notifications as MinIO, AWS S3 and EventBridge publish them, with our own names
EVENT_FIXTURES = Path(__file__).parent / "fixtures" / "events"

MAX_OBJECT_BYTES = 256 * 1024


MAX_PIXELS = 4_000_000


def counting_requests(client: Any, kind: type) -> list[Any]:
    """Each request of ``kind`` a Kafka client sends, as it leaves (its send, watched)."""
    sent: list[Any] = []
    send = client.send

    async def watched(node_id: int, request: object, **kwargs: object) -> object:
        if isinstance(request, kind):
            sent.append(request)
        return await send(node_id, request, **kwargs)

    client.send = watched
    return sent


def samples_dir() -> Path:
    return Path(str(resources.files("streamapp").joinpath("assets", "samples")))


def sample_label(path: Path) -> int:
    """Bundled samples are named ``<label>-<id>.<ext>``."""
    return int(path.name.split("-", 1)[0])


def start_stack(tmp: Path, *, workers: int = 1, partitions: int = 4, predictor_args: list[str] | None = None,
                **settings: str) -> Stack:
    config = StackConfig(
        data_dir=tmp,
        web_port=free_port(),
        partitions=partitions,
        predictor_args=predictor_args or [],
        worker_settings={
            "STREAMAPP_MAX_OBJECT_BYTES": str(MAX_OBJECT_BYTES),
            "STREAMAPP_MAX_PIXELS": str(MAX_PIXELS),
            **settings,
        },
    )
    stack = Stack(config)
    try:
        stack.start(workers=workers)
    except BaseException:
        stack.stop()
        raise
    return stack


@contextlib.contextmanager
def running_stack(tmp: Path, **options: Any) -> Iterator[Stack]:
    """:func:`start_stack`, stopped when the block ends."""
    stack = start_stack(tmp, **options)
    try:
        yield stack
    finally:
        stack.stop()


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback)
        return json.loads(response.read())


def digit_counts(stack: Stack, worker: int = 0) -> Counter[int]:
    return Counter({int(k): v for k, v in http_json(stack.web_url(worker) + "/digits/").items()})


def counts_if_ready(stack: Stack, worker: int = 0) -> Counter[int] | None:
    """The worker's counts, or None while it answers 503 (recovering, rebalancing)
    or does not answer at all (starting, killed)."""
    try:
        return digit_counts(stack, worker)
    except urllib.error.HTTPError as exc:
        if exc.code == 503:
            return None
        raise
    except OSError:  # connection refused or reset, timed out
        return None


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def s3_call(stack: Stack, method: str, **kwargs: Any) -> Any:
    env = stack.client_env()

    async def call() -> Any:
        session = get_session()
        async with session.create_client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL_S3"],
            region_name=env.get("AWS_REGION"),
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        ) as client:
            result = await getattr(client, method)(**kwargs)
            if "Body" in result:
                async with result["Body"] as body:
                    result["Body"] = await body.read()
            return result

    return asyncio.run(call())


def list_keys(stack: Stack, bucket: str, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    token = None
    while True:
        kwargs = {"Bucket": bucket, "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        page = s3_call(stack, "list_objects_v2", **kwargs)
        keys.update(item["Key"] for item in page.get("Contents", []))
        token = page.get("NextContinuationToken")
        if not token:
            return keys


def produce(stack: Stack, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    """Publish raw (key, value) messages, as another system would."""

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap)
        await producer.start()
        try:
            for key, value in messages:
                await producer.send_and_wait(topic, value=value, key=key)
        finally:
            await producer.stop()

    asyncio.run(send())


def read_topic(stack: Stack, topic: str, *, timeout: float = 5.0) -> list[dict]:
    """Every record of ``topic`` so far, JSON-decoded (no consumer group: nothing committed)."""

    async def read() -> list[dict]:
        consumer = AIOKafkaConsumer(bootstrap_servers=stack.broker.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = await topic_partitions(stack.broker.bootstrap, topic)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            records: list[dict] = []
            deadline = time.monotonic() + timeout
            idle = 0
            while time.monotonic() < deadline and idle < 2:
                batch = await consumer.getmany(timeout_ms=500)
                if not any(batch.values()):
                    idle += 1
                    continue
                idle = 0
                for messages in batch.values():
                    records.extend(json.loads(m.value) for m in messages)
            return records
        finally:
            await consumer.stop()

    return asyncio.run(read())


def upload_files(stack: Stack, paths: list[Path], *, prefix: str, notify: bool = True) -> list:
    """``streamapp upload`` as a library call, with the stack's credentials."""
    import os

    from streamapp.tools.upload import upload

    env = stack.client_env()
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        return asyncio.run(
            upload(
                paths,
                bucket=stack.config.input_bucket,
                prefix=prefix,
                broker_url=env["BROKER_URL"],
                events_topic=stack.settings.events_topic,
                notify=notify,
                endpoint_url=env["AWS_ENDPOINT_URL_S3"],
                region=env.get("AWS_REGION"),
                progress=False,
            )
        )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


SETTLE = 60.0  # seconds any expected outcome may take on a loaded 2-core machine


def tricky_copies(samples: list[Path], dest: Path, folder: str = "ünï cödé+x 100% (a)") -> dict[str, int]:
    """Copy samples under names that need URL-encoding; return {relative key: label}."""
    target = dest / folder
    target.mkdir(parents=True)
    labels = {}
    for index, path in enumerate(samples):
        name = f"{path.stem} copy+{index}{path.suffix}"
        shutil.copy(path, target / name)
        labels[f"{folder}/{name}"] = sample_label(path)
    return labels


def wait_counts(stack, expected: Counter, worker: int = 0) -> Counter:
    return wait_for(
        lambda: (c := counts_if_ready(stack, worker)) == expected and c,
        timeout=SETTLE,
        what=f"counts {dict(expected)}",
    )


def event_fixture(name: str) -> bytes:
    return (EVENT_FIXTURES / name).read_bytes()


def event_fixture_doc(name: str) -> dict[str, Any]:
    return json.loads(event_fixture(name))


class Clock:
    """A clock a test moves by hand (``clock.now += seconds``), for code that takes one."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- the counting store, without a broker ----------------------------------------------


def counting_store(datadir: Path, value_type: type | None) -> Iterator[Any]:
    """An ``images`` table's CountingStore in ``datadir`` (for a ``yield from`` fixture)."""
    import faust

    from streamapp.kafka.store import CountingStore

    app = faust.App("state-test", store="counting://", datadir=str(datadir))
    store = app.Table("images", key_type=str, value_type=value_type).data
    assert isinstance(store, CountingStore)
    yield store
    store._dbs.clear()


def changelog_event(store: Any, partition: int, offset: int, key: str, value: bytes | None) -> Any:
    """One changelog record of ``store``'s table, as recovery and standbys apply it."""
    from faust.events import Event
    from faust.types import TP, Message

    topic = store.table.changelog_topic_name
    message = Message(topic, partition, offset, 0.0, 0, None, key=json.dumps(key).encode(), value=value,
                      checksum=None, tp=TP(topic, partition))
    return Event(store.app, message.key, message.value, None, message)
