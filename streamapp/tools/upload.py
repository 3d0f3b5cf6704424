"""Upload images to S3 and announce them the way MinIO would.

Reads: files and folders on disk. Writes: objects in the input bucket and,
unless the store notifies by itself, one MinIO ``s3:ObjectCreated:Put``
notification per object on the events topic (same JSON, same Kafka key),
because a local S3 server has no bucket notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiokafka import AIOKafkaProducer

from streamapp.embedded.notifications import minio_notification
from streamapp.pipeline.records import ObjectRef

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".pgm", ".ppm"})


def bootstrap_servers(broker_url: str) -> str:
    """``kafka://h1:9092;h2:9092`` (Faust's form) -> ``h1:9092,h2:9092`` (aiokafka's)."""
    hosts = []
    for part in broker_url.replace(",", ";").split(";"):
        part = part.strip()
        if "://" in part:
            part = part.split("://", 1)[1]
        if part:
            hosts.append(part.rstrip("/"))
    if not hosts:
        raise ValueError(f"no broker host in {broker_url!r}")
    return ",".join(hosts)


def image_files(paths: Iterable[Path]) -> Iterator[tuple[Path, str]]:
    """(file, object key) for every image under ``paths``; folders keep their relative layout."""
    for path in paths:
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                    yield file, file.relative_to(path).as_posix()
        elif path.is_file():
            yield path, path.name
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")


@dataclass(frozen=True)
class Uploaded:
    ref: ObjectRef
    path: Path


class Progress:
    """One self-rewriting line on stderr: done/total, rate, errors."""

    def __init__(self, total: int, label: str, stream=sys.stderr) -> None:
        self.total, self.label, self.stream = total, label, stream
        self.done = self.failed = 0
        self.started = time.monotonic()
        self._last = 0.0

    def step(self, ok: bool = True) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        now = time.monotonic()
        if now - self._last > 0.1 or self.done == self.total:
            self._last = now
            self.draw(now)

    def draw(self, now: float) -> None:
        width = 30
        filled = int(width * self.done / max(1, self.total))
        rate = self.done / max(1e-9, now - self.started)
        failed = f", {self.failed} failed" if self.failed else ""
        end = "\n" if self.done == self.total else ""
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} ({rate:.0f}/s{failed}){end}"
        )
        self.stream.flush()


async def upload(
    paths: Iterable[Path],
    *,
    bucket: str,
    prefix: str = "",
    broker_url: str | None,
    events_topic: str,
    notify: bool = True,
    endpoint_url: str | None = None,
    region: str | None = None,
    concurrency: int = 16,
    progress: bool = True,
) -> list[Uploaded]:
    """Upload every image under ``paths`` to ``s3://bucket/prefix...``; notify if asked."""
    files = list(image_files(paths))
    bar = Progress(len(files), "uploading") if progress and files else None
    gate = asyncio.Semaphore(concurrency)
    config = AioConfig(max_pool_connections=concurrency, retries={"max_attempts": 5, "mode": "standard"})
    endpoint = endpoint_url or "http://127.0.0.1:9000"
    async with contextlib.AsyncExitStack() as stack:
        s3 = await stack.enter_async_context(
            get_session().create_client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
        )
        producer = None
        if notify:
            if not broker_url:
                raise ValueError("publishing notifications needs a broker URL (BROKER_URL)")
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(broker_url), linger_ms=5)
            await producer.start()
            stack.push_async_callback(producer.stop)

        async def one(path: Path, key: str) -> Uploaded:
            async with gate:
                body = path.read_bytes()
                content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                response = await s3.put_object(Bucket=bucket, Key=prefix + key, Body=body, ContentType=content_type)
                ref = ObjectRef(
                    bucket=bucket,
                    key=prefix + key,
                    etag=str(response.get("ETag", "")).strip('"'),
                    version_id=str(response.get("VersionId") or ""),
                    size=len(body),
                    event_name="s3:ObjectCreated:Put",
                )
                if producer is not None:
                    kafka_key, value = minio_notification(
                        ref, region=region or "", endpoint=endpoint, content_type=content_type
                    )
                    await producer.send_and_wait(events_topic, value=value, key=kafka_key)
                if bar:
                    bar.step()
                return Uploaded(ref=ref, path=path)

        return list(await asyncio.gather(*(one(path, key) for path, key in files)))
