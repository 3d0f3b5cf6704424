"""The S3 service: one long-lived aiobotocore client per worker.

Reads: objects named by notifications (GetObject). Writes: archive copies
(CopyObject, server side; the image bytes never pass through the worker), under
``<prefix><digit>/`` or, held for review, ``<review prefix><digit>/``.

Client errors are mapped here, at the edge, to the pipeline's two kinds:
``BadInput`` (the object is gone, too large: dead-letter it) and
``StorageUnavailable`` (S3 down, throttling, 5xx, bad credentials: retry).
"""

from __future__ import annotations

import contextlib
import logging

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError
from mode import Service

from streamapp.errors import ObjectNotFound, ObjectTooLarge, StorageUnavailable
from streamapp.pipeline.records import ObjectRef
from streamapp.settings import Settings

log = logging.getLogger(__name__)

#: S3 error codes that say the object (or its bucket) does not exist
_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "404", "NotFound"})


def archive_key(ref: ObjectRef, digit: int, prefix: str = "") -> str:
    """Where the archived copy of ``ref`` goes: ``<prefix><digit>/<original key>``."""
    return f"{prefix}{digit}/{ref.key}"


def held_for_review(confidence: float | None, below: float | None) -> bool:
    """Whether an image is held for a person to check: review is on (``below``,
    STREAMAPP_REVIEW_BELOW) and nothing says the model is sure of it: its top
    probability is under ``below``, or there is none (no probabilities, NaN)."""
    if below is None:
        return False
    return confidence is None or not confidence >= below  # "not >=": NaN is not sure


def archive_destination(ref: ObjectRef, digit: int, confidence: float | None, settings: Settings) -> tuple[str, bool]:
    """The archive key of an image labeled ``digit`` with ``confidence``, and
    whether it is held for review: ``<review prefix><digit>/<key>`` then (the
    digit is the model's guess, for the person who checks it), else
    ``<archive prefix><digit>/<key>``. A function of the record and the
    settings alone, so a replayed record goes to the same key."""
    review = held_for_review(confidence, settings.review_below)
    return archive_key(ref, digit, settings.review_prefix if review else settings.archive_prefix), review


def _error_code(exc: ClientError) -> tuple[str, int]:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(error.get("Code", "")), int(status or 0)


def _map_client_error(exc: ClientError, what: str) -> Exception:
    code, status = _error_code(exc)
    if code in _NOT_FOUND or status == 404:
        return ObjectNotFound(f"{what}: {code or status} (the object or its bucket does not exist)")
    # 403 and friends are treated as a dependency fault: with wrong credentials
    # or policies every object fails alike, and dead-lettering them all would
    # lose the stream. The input waits, and the log says why.
    return StorageUnavailable(f"{what}: S3 answered {status} {code}: {exc}", status=status)


def s3_session() -> AioSession:
    """An aiobotocore session tuned for the pipeline's calls (the bench's S3 client uses it too)."""
    session = get_session()
    # botocore parses every response timestamp (LastModified ...) with
    # dateutil; the pipeline reads none of them, so they stay strings (the AWS
    # CLI does the same with this public hook)
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
    return session


def s3_config(max_connections: int) -> AioConfig:
    """Pool and timeouts for ``max_connections`` calls in flight.

    botocore retries a little on its own; the unbounded backoff is ours
    (retry.py). Checksums only where S3 requires them: the worker uploads no
    bodies, and a corrupt download fails to decode (a dead letter) anyway.
    """
    return AioConfig(
        max_pool_connections=max_connections,
        connect_timeout=5,
        read_timeout=30,
        retries={"max_attempts": 2, "mode": "standard"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


class Storage(Service):
    """Owns the aiobotocore client: opened when the worker starts, closed when it stops."""

    def __init__(self, settings: Settings, **kwargs: object) -> None:
        self.settings = settings
        self._stack = contextlib.AsyncExitStack()
        self._client: object | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        self._client = await self._stack.enter_async_context(
            s3_session().create_client(
                "s3",
                endpoint_url=self.settings.s3_endpoint_url,
                region_name=self.settings.s3_region,
                config=s3_config(self.settings.s3_max_connections),
            )
        )
        log.info("S3 client ready (endpoint %s)", self.settings.s3_endpoint_url or "AWS default")

    async def on_stop(self) -> None:
        await self._stack.aclose()
        self._client = None

    @property
    def client(self):
        if self._client is None:
            raise StorageUnavailable("the S3 client is not started")
        return self._client

    async def get(self, ref: ObjectRef) -> bytes:
        """The object's bytes; ``ObjectTooLarge`` is decided from Content-Length, before the body is read."""
        what = f"GetObject {ref.url!r}"  # untrusted: quoted
        params = {"Bucket": ref.bucket, "Key": ref.key}
        if ref.version_id:
            params["VersionId"] = ref.version_id
        try:
            response = await self.client.get_object(**params)
            async with response["Body"] as body:
                length = int(response.get("ContentLength", -1))
                limit = self.settings.max_object_bytes
                if length > limit:
                    raise ObjectTooLarge(f"object is {length} bytes, over the {limit}-byte limit")
                data = await body.read()
        except ClientError as exc:
            raise _map_client_error(exc, what) from exc
        except (TimeoutError, BotoCoreError, aiohttp.ClientError, OSError) as exc:
            raise StorageUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
        if len(data) > self.settings.max_object_bytes:  # a server that sent no Content-Length
            raise ObjectTooLarge(f"object is {len(data)} bytes, over the {self.settings.max_object_bytes}-byte limit")
        return data

    async def archive(self, ref: ObjectRef, key: str) -> None:
        """Copy the object, server side, to ``key`` in the archive bucket
        (:func:`archive_destination`).

        Idempotent: a replayed record copies the same source to the same key.
        """
        source = {"Bucket": ref.bucket, "Key": ref.key}
        if ref.version_id:
            source["VersionId"] = ref.version_id
        what = f"CopyObject {ref.url!r} -> {f's3://{self.settings.archive_bucket}/{key}'!r}"
        try:
            await self.client.copy_object(Bucket=self.settings.archive_bucket, Key=key, CopySource=source)
        except ClientError as exc:
            error = _map_client_error(exc, what)
            if isinstance(error, ObjectNotFound) and _error_code(exc)[0] == "NoSuchBucket":
                # A missing *archive* bucket is a configuration fault: wait for it.
                # A missing source bucket means the image is gone: dead-letter it.
                if not await self._bucket_exists(self.settings.archive_bucket):
                    raise StorageUnavailable(f"{what}: archive bucket {self.settings.archive_bucket!r} does not exist") from exc
            raise error from exc
        except (TimeoutError, BotoCoreError, aiohttp.ClientError, OSError) as exc:
            raise StorageUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc

    async def bucket_answers(self, bucket: str) -> bool:
        """Whether S3 answers HeadBucket for ``bucket``: it is up, and these credentials may use it."""
        try:
            await self.client.head_bucket(Bucket=bucket)
        except (ClientError, BotoCoreError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.debug("HeadBucket %r: %r", bucket, exc)
            return False
        return True

    async def _bucket_exists(self, bucket: str) -> bool:
        try:
            await self.client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if isinstance(_map_client_error(exc, "HeadBucket"), ObjectNotFound):
                return False
            raise _map_client_error(exc, f"HeadBucket {bucket}") from exc
        except (TimeoutError, BotoCoreError, aiohttp.ClientError, OSError) as exc:
            raise StorageUnavailable(f"HeadBucket {bucket}: {type(exc).__name__}: {exc}") from exc
        return True
