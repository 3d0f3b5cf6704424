"""The embedded stack's S3 server: nanio on a local port, objects on disk.

Reads:  ``<data_dir>/credentials.toml`` (created on the first start).
Writes: objects under ``<data_dir>/objects/``, the server's output to
        ``<data_dir>/nanio.log``; creates the buckets it is asked for.

Production talks to MinIO or AWS S3; locally (``streamapp up``, the
integration tests) this module starts nanio, a small S3-compatible server
that keeps objects as files and checks SigV4 signatures, so a worker with
wrong credentials fails here as it would against MinIO.

The credentials are not hard-coded: the first start in a data directory
generates a random access key and secret key and stores them in
``credentials.toml`` (mode 0600, also nanio's options file); later starts
reuse them, so objects written earlier stay readable. ``client_env()`` gives
the environment variables a worker or uploader needs to reach the server.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import sys
import time
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from streamapp.embedded.process import ManagedProcess, ServiceFailed, free_port

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "credentials.toml"
OBJECTS_DIR = "objects"
LOG_FILE = "nanio.log"
DEFAULT_REGION = "us-east-1"

_KEY_RE = re.compile(r"^[0-9A-Za-z]{16,128}$")

# botocore's error codes for "this bucket is already there and it is yours":
# nanio and MinIO answer BucketAlreadyOwnedByYou (409); AWS in us-east-1 and
# moto answer 200.
_BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou"})


class EmbeddedS3Error(ServiceFailed):
    """The embedded S3 server could not be started or set up."""


def load_or_create_credentials(path: Path) -> tuple[str, str]:
    """Return ``(access_key, secret_key)`` stored at ``path``, creating them on first use.

    The file is nanio's options file (a ``[[users]]`` table), written with
    mode 0600 and never overwritten: a data directory keeps its keys.
    """
    if not path.exists():
        access_key = "SA" + secrets.token_hex(9).upper()  # 20 characters, like an AWS key id
        secret_key = secrets.token_hex(20)  # 40 characters
        text = (
            "# S3 credentials of streamapp's embedded server for this data directory.\n"
            "# Generated on its first start; keep this file private.\n"
            "[[users]]\n"
            f'access_key = "{access_key}"\n'
            f'secret_key = "{secret_key}"\n'
        )
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            # link, not rename: a concurrent first start that won the race keeps its keys
            try:
                os.link(tmp, path)
                log.info("generated S3 credentials in %s", path)
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    if path.stat().st_mode & 0o077:
        log.warning("%s was readable by others: setting its mode to 0600", path)
        path.chmod(0o600)
    with path.open("rb") as f:
        try:
            users = tomllib.load(f).get("users") or []
        except tomllib.TOMLDecodeError as exc:
            raise EmbeddedS3Error(f"{path} is not valid TOML: {exc}") from exc
    if not users or not isinstance(users[0], dict):
        raise EmbeddedS3Error(f"{path} has no [[users]] table")
    access_key, secret_key = users[0].get("access_key"), users[0].get("secret_key")
    if not (isinstance(access_key, str) and isinstance(secret_key, str)):
        raise EmbeddedS3Error(f"{path}: access_key and secret_key must be strings")
    if not (_KEY_RE.match(access_key) and _KEY_RE.match(secret_key)):
        raise EmbeddedS3Error(f"{path}: access_key and secret_key must be 16-128 letters or digits")
    return access_key, secret_key


def _is_bucket_exists(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    return response.get("Error", {}).get("Code") in _BUCKET_EXISTS_CODES


async def ensure_buckets(s3: Any, buckets: Iterable[str]) -> None:
    """Create ``buckets`` with an aiobotocore S3 client, leaving existing ones alone.

    Works against nanio, MinIO, AWS and moto (which differ in how they answer
    a bucket that is already there). A bucket owned by someone else
    (``BucketAlreadyExists``) or any other error propagates.
    """
    from botocore.exceptions import ClientError

    for bucket in buckets:
        try:
            await s3.create_bucket(Bucket=bucket)
            log.info("created bucket %s", bucket)
        except ClientError as exc:
            if not _is_bucket_exists(exc):
                raise


def ensure_buckets_sync(s3: Any, buckets: Iterable[str]) -> None:
    """``ensure_buckets`` for a synchronous botocore client (setup scripts, not async code)."""
    from botocore.exceptions import ClientError

    for bucket in buckets:
        try:
            s3.create_bucket(Bucket=bucket)
            log.info("created bucket %s", bucket)
        except ClientError as exc:
            if not _is_bucket_exists(exc):
                raise


class EmbeddedS3:
    """nanio as a child process: ``with EmbeddedS3(path, buckets=["images"]) as s3: ...``.

    ``start()`` returns once the server answers a signed S3 request and the
    buckets exist; ``stop()`` ends it. Objects persist in ``data_dir`` across
    restarts.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        region: str = DEFAULT_REGION,
        buckets: Sequence[str] = (),
        startup_timeout: float = 30.0,
        log_path: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.host = host
        self.port = port
        self.region = region
        self.buckets = tuple(buckets)
        self.startup_timeout = startup_timeout
        self.log_path = log_path or self.data_dir / LOG_FILE
        self._credentials: tuple[str, str] | None = None
        self._botocore_session: Any = None  # one per instance: its service models load once
        self.process: ManagedProcess | None = None

    # -- what clients need ------------------------------------------------

    @property
    def credentials_path(self) -> Path:
        return self.data_dir / CREDENTIALS_FILE

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / OBJECTS_DIR

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("EmbeddedS3 has no port until it is started")
        # botocore addresses buckets path-style (http://host:port/bucket/key) on a
        # custom endpoint, which is what nanio serves
        return f"http://{self.host}:{self.port}"

    @property
    def access_key(self) -> str:
        return self._load_credentials()[0]

    @property
    def secret_key(self) -> str:
        return self._load_credentials()[1]

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``session.create_client("s3", **kwargs)``."""
        return {
            "endpoint_url": self.endpoint_url,
            "region_name": self.region,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
        }

    def client_env(self) -> dict[str, str]:
        """The environment variables a worker or uploader needs to use this server.

        Beside endpoint, keys and region they keep botocore off the developer's
        ``~/.aws`` files and the EC2 metadata service. Merge them over an
        environment without other ``AWS_*`` variables (``environ()`` does):
        an ``AWS_PROFILE`` left in it makes botocore fail with ProfileNotFound.
        """
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            # botocore reads the region from AWS_DEFAULT_REGION, not AWS_REGION
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def environ(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) without its ``AWS_*`` variables, plus ``client_env()``."""
        base = os.environ if base is None else base
        env = {k: v for k, v in base.items() if not k.startswith("AWS_")}
        env.update(self.client_env())
        return env

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> EmbeddedS3:
        if self.process is not None and self.process.running():
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.objects_dir.mkdir(exist_ok=True)
        self._load_credentials()
        if self.port is None:
            self.port = free_port(self.host)
        argv = [
            sys.executable, "-m", "nanio", "serve",
            "--options", str(self.credentials_path),
            "--data-dir", str(self.objects_dir),
            "--host", self.host,
            "--port", str(self.port),
            "--region", self.region,
            "--workers", "1",
            "--log-level", "warning",
            "--no-access-log",
        ]  # fmt: skip
        # nanio reads NANIO_* variables too: keep the caller's out of its way
        env = {k: v for k, v in os.environ.items() if not k.startswith("NANIO_")}
        self.process = ManagedProcess("s3", argv, log_path=self.log_path, env=env).start()
        try:
            self._wait_ready()
            if self.buckets:
                ensure_buckets_sync(self._sync_client(), self.buckets)
        except BaseException:
            self.stop()
            raise
        log.info("S3 (nanio) ready at %s, data in %s", self.endpoint_url, self.objects_dir)
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the server; return its exit code (None if it was never started)."""
        if self.process is None:
            return None
        return self.process.stop(timeout)

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    def __enter__(self) -> EmbeddedS3:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------

    def _load_credentials(self) -> tuple[str, str]:
        if self._credentials is None:
            if not self.data_dir.is_dir():
                raise RuntimeError(f"EmbeddedS3 credentials are created by start() (no {self.data_dir} yet)")
            self._credentials = load_or_create_credentials(self.credentials_path)
        return self._credentials

    def _sync_client(self, *, timeout: float = 5.0) -> Any:
        # synchronous botocore is fine here: start() is blocking setup code, never
        # called per event; the worker uses its own long-lived aiobotocore client
        import botocore.session
        from botocore.config import Config

        config = Config(
            connect_timeout=min(timeout, 1.0),
            read_timeout=timeout,
            retries={"max_attempts": 1, "mode": "standard"},
        )
        if self._botocore_session is None:
            self._botocore_session = botocore.session.Session()
        return self._botocore_session.create_client("s3", config=config, **self.client_kwargs())

    def _wait_ready(self) -> None:
        """Block until the server answers a signed ListBuckets, or raise ``EmbeddedS3Error``."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self.process is None or self.port is None:
            raise RuntimeError("_wait_ready() before start()")
        deadline = time.monotonic() + self.startup_timeout
        self.process.wait_port(self.host, self.port, timeout=self.startup_timeout)
        s3 = self._sync_client(timeout=2.0)
        last: Exception | None = None
        while time.monotonic() < deadline:
            self.process.check()
            try:
                s3.list_buckets()
                return
            except ClientError as exc:
                # an answer, but not ours to accept (wrong keys: another server on this port?)
                raise EmbeddedS3Error(
                    f"S3 server at {self.endpoint_url} refused our credentials "
                    f"({exc.response.get('Error', {}).get('Code')}); is another server using port {self.port}?"
                    f"\n{self.process.log_tail()}"
                ) from exc
            except BotoCoreError as exc:  # not listening yet, connection reset, ...
                last = exc
                time.sleep(0.05)
        raise EmbeddedS3Error(
            f"S3 server at {self.endpoint_url} did not answer within {self.startup_timeout:.0f}s "
            f"({last}):\n{self.process.log_tail()}"
        )
