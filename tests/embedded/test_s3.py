"""The embedded S3 server (nanio) against real aiobotocore clients.

Reads nothing outside pytest's temporary directories; every server a test
starts is stopped by its fixture's finalizer.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import ClientError, EndpointConnectionError

from streamapp.embedded.process import ServiceFailed, port_open
from streamapp.embedded.s3 import EmbeddedS3, ensure_buckets, load_or_create_credentials

pytestmark = pytest.mark.integration

BUCKETS = ("images", "archive")

# keys an uploader may well produce; the archiver copies them to digits/<n>/<key>
TRICKY_KEYS = [
    "plain.png",
    "ünïcödé/ß漢字.png",
    "with space.png",
    "a+b.png",
    "100%.png",
    "nested/a/b/c/d.png",
    "q?x=1#frag&y=2.png",
    "~!'()*,;=$@:.png",
]


def run(coro):
    return asyncio.run(coro)


_session: list[AioSession] = []


def s3_client(server: EmbeddedS3, **overrides):
    """An aiobotocore S3 client for ``server``; one session for the module, so S3's model loads once."""
    if not _session:
        _session.append(get_session())
    kwargs = server.client_kwargs() | overrides
    config = AioConfig(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2, read_timeout=10)
    return _session[0].create_client("s3", config=config, **kwargs)


def error_of(exc: ClientError) -> tuple[str, int]:
    return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedS3]:
    s3 = EmbeddedS3(tmp_path_factory.mktemp("s3"), buckets=BUCKETS)
    try:
        s3.start()
        yield s3
    finally:
        s3.stop()


@pytest.fixture
def started() -> Iterator[list[EmbeddedS3]]:
    """A list to put started servers in; all of them are stopped afterwards."""
    started: list[EmbeddedS3] = []
    try:
        yield started
    finally:
        for s3 in started:
            s3.stop()


# -- credentials (no server) --------------------------------------------------


def test_credentials_generated_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "credentials.toml"
    first = load_or_create_credentials(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first[0]) >= 16 and len(first[1]) >= 32 and first[0] != first[1]
    assert load_or_create_credentials(path) == first
    assert load_or_create_credentials(tmp_path / "other.toml") != first


def test_credentials_file_readable_by_others_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "credentials.toml"
    keys = load_or_create_credentials(path)
    path.chmod(0o644)
    assert load_or_create_credentials(path) == keys
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- the running server ---------------------------------------------------------


def test_started_server_answers_with_its_buckets(server: EmbeddedS3) -> None:
    assert server.running()
    assert server.credentials_path.is_file()
    assert stat.S_IMODE(server.credentials_path.stat().st_mode) == 0o600

    async def names() -> set[str]:
        async with s3_client(server) as s3:
            return {b["Name"] for b in (await s3.list_buckets())["Buckets"]}

    assert set(BUCKETS) <= run(names())


def test_ensure_buckets_is_idempotent(server: EmbeddedS3) -> None:
    async def go() -> None:
        async with s3_client(server) as s3:
            await ensure_buckets(s3, ["images", "extra"])
            await ensure_buckets(s3, ["images", "extra"])
            await s3.head_bucket(Bucket="extra")

    run(go())


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"aws_secret_access_key": "0" * 40}, "SignatureDoesNotMatch"),
        ({"aws_access_key_id": "SANOSUCHKEY000000000"}, "InvalidAccessKeyId"),
    ],
    ids=["wrong-secret", "unknown-access-key"],
)
def test_wrong_credentials_are_rejected(server: EmbeddedS3, overrides: dict[str, str], code: str) -> None:
    async def go() -> None:
        async with s3_client(server, **overrides) as s3:
            await s3.put_object(Bucket="images", Key="x.png", Body=b"x")

    with pytest.raises(ClientError) as info:
        run(go())
    assert error_of(info.value) == (code, 403)


@pytest.mark.parametrize("key", TRICKY_KEYS)
def test_put_get_copy_with_tricky_keys(server: EmbeddedS3, key: str) -> None:
    body = os.urandom(1024)
    etag = f'"{hashlib.md5(body).hexdigest()}"'  # noqa: S324 (S3's ETag is an MD5)

    async def go() -> None:
        async with s3_client(server) as s3:
            put = await s3.put_object(Bucket="images", Key=key, Body=body)
            assert put["ETag"] == etag

            got = await s3.get_object(Bucket="images", Key=key)
            assert got["ContentLength"] == len(body)  # known before the body is read
            async with got["Body"] as stream:
                assert await stream.read() == body

            # CopySource as a dict with the raw key: botocore URL-encodes it once
            copied = await s3.copy_object(
                Bucket="archive", Key=f"digits/3/{key}", CopySource={"Bucket": "images", "Key": key}
            )
            assert copied["CopyObjectResult"]["ETag"] == etag
            got = await s3.get_object(Bucket="archive", Key=f"digits/3/{key}")
            async with got["Body"] as stream:
                assert await stream.read() == body

            listed = await s3.list_objects_v2(Bucket="archive", Prefix=f"digits/3/{key}")
            assert [o["Key"] for o in listed["Contents"]] == [f"digits/3/{key}"]

    run(go())


@pytest.mark.xfail(
    strict=True,
    reason="nanio 0.1.7 URL-decodes the path twice when checking SigV4: keys holding a %XX escape get 403",
)
def test_key_with_percent_escape(server: EmbeddedS3) -> None:
    async def go() -> None:
        async with s3_client(server) as s3:
            await s3.put_object(Bucket="images", Key="100%25.png", Body=b"x")

    run(go())


def test_copy_source_encoded_by_the_caller_is_not_found(server: EmbeddedS3) -> None:
    """The archiver's pitfall: botocore encodes CopySource itself, so encoding it first
    (or passing a notification's still-encoded key) names another object."""
    key = "with space+plus ü.png"

    async def go() -> list[str]:
        codes = []
        async with s3_client(server) as s3:
            await s3.put_object(Bucket="images", Key=key, Body=b"x")
            for wrong in (urllib.parse.quote(key), urllib.parse.quote_plus(key)):
                try:
                    await s3.copy_object(Bucket="archive", Key="y.png", CopySource={"Bucket": "images", "Key": wrong})
                except ClientError as exc:
                    codes.append(error_of(exc)[0])
        return codes

    assert run(go()) == ["NoSuchKey", "NoSuchKey"]


def test_range_get(server: EmbeddedS3) -> None:
    async def go() -> None:
        async with s3_client(server) as s3:
            await s3.put_object(Bucket="images", Key="range.bin", Body=bytes(range(100)))
            got = await s3.get_object(Bucket="images", Key="range.bin", Range="bytes=10-19")
            assert got["ContentRange"] == "bytes 10-19/100"
            async with got["Body"] as stream:
                assert await stream.read() == bytes(range(10, 20))

    run(go())


def test_missing_key_and_bucket(server: EmbeddedS3) -> None:
    async def code_of(coro) -> tuple[str, int]:
        try:
            await coro
        except ClientError as exc:
            return error_of(exc)
        raise AssertionError("no error")

    async def go() -> None:
        async with s3_client(server) as s3:
            assert await code_of(s3.get_object(Bucket="images", Key="nope.png")) == ("NoSuchKey", 404)
            # HEAD answers carry no body: botocore reports the status as the code
            assert await code_of(s3.head_object(Bucket="images", Key="nope.png")) == ("404", 404)
            assert await code_of(s3.get_object(Bucket="nobucket", Key="x.png")) == ("NoSuchBucket", 404)
            assert await code_of(s3.head_object(Bucket="nobucket", Key="x.png")) == ("404", 404)
            assert await code_of(s3.put_object(Bucket="nobucket", Key="x.png", Body=b"")) == ("NoSuchBucket", 404)
            assert await code_of(
                s3.copy_object(Bucket="archive", Key="y.png", CopySource={"Bucket": "images", "Key": "nope.png"})
            ) == ("NoSuchKey", 404)
            assert await code_of(
                s3.copy_object(Bucket="nobucket", Key="y.png", CopySource={"Bucket": "images", "Key": "plain.png"})
            ) == ("NoSuchBucket", 404)
            await s3.delete_object(Bucket="images", Key="never-there.png")  # idempotent, no error

    run(go())


def test_client_env_is_enough_for_a_client(server: EmbeddedS3, monkeypatch: pytest.MonkeyPatch) -> None:
    env = server.environ({"PATH": "/usr/bin", "AWS_PROFILE": "someone-elses", "AWS_SESSION_TOKEN": "t"})
    assert "AWS_PROFILE" not in env and "AWS_SESSION_TOKEN" not in env
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in server.client_env().items():
        monkeypatch.setenv(name, value)

    async def go() -> str:
        async with get_session().create_client("s3") as s3:  # endpoint, keys, region from env
            assert s3.meta.region_name == server.region
            await s3.put_object(Bucket="images", Key="from-env.png", Body=b"e")
            got = await s3.get_object(Bucket="images", Key="from-env.png")
            async with got["Body"] as stream:
                return (await stream.read()).decode()

    assert run(go()) == "e"


# -- restarts -----------------------------------------------------------------------


def test_restart_keeps_credentials_and_objects_and_clients_reconnect(tmp_path: Path, started: list[EmbeddedS3]) -> None:
    """Down: a long-lived client gets EndpointConnectionError. Started again on the same
    data dir and port: same keys, same objects, and the same client works again."""
    key = "ünï code/with space+plus.png"
    first = EmbeddedS3(tmp_path / "s3", buckets=["images"])
    started.append(first)
    first.start()

    async def go() -> bytes:
        async with s3_client(first) as s3:
            await s3.put_object(Bucket="images", Key=key, Body=b"kept")
            await asyncio.to_thread(first.stop)
            assert not first.running() and not port_open(first.host, first.port)
            with pytest.raises(EndpointConnectionError):
                await s3.get_object(Bucket="images", Key=key)

            second = EmbeddedS3(tmp_path / "s3", port=first.port, buckets=["images"])  # bucket exists: fine
            started.append(second)
            await asyncio.to_thread(second.start)
            assert (second.access_key, second.secret_key) == (first.access_key, first.secret_key)
            got = await s3.get_object(Bucket="images", Key=key)
            async with got["Body"] as stream:
                return await stream.read()

    assert run(go()) == b"kept"


def test_start_fails_clearly_when_the_port_is_taken(
    tmp_path: Path, server: EmbeddedS3, started: list[EmbeddedS3]
) -> None:
    other = EmbeddedS3(tmp_path / "other", port=server.port, startup_timeout=10)
    started.append(other)
    with pytest.raises(ServiceFailed, match=r"refused our credentials|exited"):
        other.start()
    assert not other.running()
