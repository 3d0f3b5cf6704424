"""The whole pipeline on this machine: broker, S3 server, predictor, workers.

Reads: a data directory and ports. Writes: child processes, their logs under
``<data>/logs/``, and ``<data>/stack.env``: the environment a client needs to
reach this stack (``streamapp upload`` reads it), owner-readable only since it
holds the generated S3 credentials.

Each worker is a plain ``python -m faust -A streamapp worker`` — the
production command — given an environment that points it at the embedded
services. The embedded broker's work-arounds reach it only through that
environment (the ``tansu://`` broker URL and short group timeouts).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from streamapp.embedded import tansu
from streamapp.embedded.broker import EmbeddedBroker
from streamapp.embedded.process import ManagedProcess, ServiceFailed, free_port, port_free
from streamapp.embedded.s3 import EmbeddedS3
from streamapp.settings import Settings

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


@dataclass
class StackConfig:
    data_dir: Path
    web_port: int = 6066
    broker_port: int = 0  # 0: any free port
    s3_port: int = 0
    predictor_port: int = 0
    partitions: int = 8
    input_bucket: str = "images"
    #: STREAMAPP_* settings handed to every worker (e.g. batch size, protocol)
    worker_settings: dict[str, str] = field(default_factory=dict)
    #: further arguments of ``streamapp predictor`` (e.g. fault injection in tests)
    predictor_args: list[str] = field(default_factory=list)


class Stack:
    """Starts and stops the embedded services; usable as a context manager."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.data_dir = config.data_dir.resolve()
        self.logs = self.data_dir / "logs"
        self.settings = Settings.from_env(config.worker_settings)
        self.broker: EmbeddedBroker | None = None
        self.s3: EmbeddedS3 | None = None
        self.predictor: ManagedProcess | None = None
        self.predictor_url = ""
        self.predictor_port = 0
        self.workers: dict[int, ManagedProcess] = {}
        self._web_ports: dict[int, int] = {}

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, workers: int = 1) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self.clear_worker_state()
        self.broker = EmbeddedBroker(port=self.config.broker_port or None, log_path=self.logs / "broker.log")
        self.broker.start()
        self.s3 = EmbeddedS3(
            self.data_dir / "s3",
            port=self.config.s3_port or None,
            buckets=[self.config.input_bucket, self.settings.archive_bucket],
            log_path=self.logs / "s3.log",
        )
        self.s3.start()
        self.start_predictor()
        self.broker.create_topics(
            {
                name: self.config.partitions
                for name in (
                    self.settings.events_topic,
                    self.settings.tensors_topic,
                    self.settings.labeled_topic,
                    self.settings.dead_letter_topic,
                )
            }
        )
        self.write_env_file()
        for index in range(workers):
            self.start_worker(index)
        for index in range(workers):
            self.wait_worker_ready(index)
        log.info("stack up in %.1fs", time.monotonic() - started)

    def clear_worker_state(self) -> None:
        """Remove the workers' table state left by an earlier run.

        The embedded broker keeps topics in memory only, so a new stack starts
        with empty changelogs; RocksDB state from before would describe
        records that no longer exist (Faust refuses to start on it: "persisted
        offset higher than highwater"). Objects in S3 are kept. Within a run,
        a restarted worker keeps its state, as in production.
        """
        for path in self.data_dir.glob("worker-*"):
            if path.is_dir():
                shutil.rmtree(path)

    def stop(self) -> None:
        for index in sorted(self.workers, reverse=True):
            self.stop_worker(index)
        self.stop_predictor()
        if self.s3 is not None:
            self.s3.stop()
            self.s3 = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    # -- predictor -----------------------------------------------------------------

    def start_predictor(self) -> None:
        # a restart keeps the port: the workers know the predictor by URL
        port = self.predictor_port or self.config.predictor_port or free_port(HOST)
        self.predictor_port = port
        self.predictor = ManagedProcess(
            "predictor",
            [sys.executable, "-m", "streamapp", "predictor", "--host", HOST, "--port", str(port),
             "--model-name", self.settings.model_name, *self.config.predictor_args],
            log_path=self.logs / "predictor.log",
            # one BLAS thread: measured 2-4x faster on 2 cores than OpenBLAS's
            # own threading, which spins against the other processes
            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
        ).start()
        self.predictor.wait_port(HOST, port, timeout=60)
        self.predictor_url = f"http://{HOST}:{port}"

    def stop_predictor(self) -> None:
        if self.predictor is not None:
            self.predictor.stop()
            self.predictor = None

    # -- S3 (stopped and restarted by the resilience tests) ---------------------------

    def stop_s3(self) -> None:
        if self.s3 is not None:
            self.s3.stop()

    def start_s3(self) -> None:
        if self.s3 is None:
            raise ServiceFailed("the stack was never started")
        self.s3.start()

    # -- workers -----------------------------------------------------------------

    def web_port(self, index: int) -> int:
        """Worker ``index``'s web port, kept across its restarts: the configured
        port plus ``index``, or, for a further worker whose port is taken (by
        any socket, an outgoing connection's included), a free one."""
        if index not in self._web_ports:
            port = self.config.web_port + index
            if index and not port_free(HOST, port):
                port = free_port(HOST)
            self._web_ports[index] = port
        return self._web_ports[index]

    def web_url(self, index: int = 0) -> str:
        return f"http://{HOST}:{self.web_port(index)}"

    def client_env(self) -> dict[str, str]:
        """What any client of this stack needs: broker, S3 endpoint and credentials."""
        if self.broker is None or self.s3 is None:
            raise ServiceFailed("the stack is not started")
        return {
            "BROKER_URL": self.broker.url,
            **self.s3.client_env(),
            "STREAMAPP_INPUT_BUCKET": self.config.input_bucket,
        }

    def further_worker_env(self) -> dict[str, str]:
        """What any worker of this stack needs but its own web port and data dir:
        ``stack.env`` holds it, so a worker started by hand joins the group."""
        return {
            **self.client_env(),
            **tansu.worker_environment(),
            "WEB_BIND": HOST,
            "WEB_HOST": HOST,
            # log lines reach the file as they are written, so a worker
            # killed -9 leaves its whole log (and tests can follow it)
            "PYTHONUNBUFFERED": "1",
            # Faust's own switch to uvloop, as the image sets it
            "FAUST_LOOP": "uvloop",
            "TOPIC_PARTITIONS": str(self.config.partitions),
            "STREAMAPP_PREDICTOR_URL": self.predictor_url or "",
            "STREAMAPP_SOURCE_BUCKETS": self.config.input_bucket,
            **self.config.worker_settings,
        }

    def worker_env(self, index: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # no stray AWS_* of the caller's (profiles, other endpoints)
        env.update(self.further_worker_env())
        env.update({"WEB_PORT": str(self.web_port(index)), "APP_DATADIR": str(self.data_dir / f"worker-{index}")})
        return env

    def start_worker(self, index: int, extra_env: Mapping[str, str] | None = None) -> ManagedProcess:
        env = self.worker_env(index)
        env.update(extra_env or {})
        worker = ManagedProcess(
            f"worker-{index}",
            [sys.executable, "-m", "faust", "-A", "streamapp", "worker", "-l", "info"],
            log_path=self.logs / f"worker-{index}.log",
            env=env,
        ).start()
        self.workers[index] = worker
        return worker

    def wait_worker_ready(self, index: int, timeout: float = 60.0) -> None:
        """Block until the worker serves its web pages (it does after table recovery)."""
        worker = self.workers[index]
        deadline = time.monotonic() + timeout
        url = self.web_url(index) + "/digits/"
        while time.monotonic() < deadline:
            worker.check()
            try:
                with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (our own loopback URL)
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise ServiceFailed(f"worker-{index} did not serve {url} within {timeout:.0f}s:\n{worker.log_tail()}")

    def stop_worker(self, index: int, timeout: float = 15.0) -> int | None:
        worker = self.workers.pop(index, None)
        return worker.stop(timeout) if worker else None

    # -- env file ------------------------------------------------------------------

    @property
    def env_file(self) -> Path:
        return self.data_dir / "stack.env"

    def write_env_file(self) -> None:
        lines = [f"{key}={shlex.quote(value)}" for key, value in sorted(self.further_worker_env().items())]
        fd = os.open(self.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("# written by `streamapp up`: the environment to reach this stack, and all a\n"
                      "# further worker needs but WEB_PORT and APP_DATADIR (README, \"The embedded stack\")\n")
            out.write("\n".join(lines) + "\n")


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a ``stack.env`` written by :meth:`Stack.write_env_file`."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        parsed = shlex.split(value)
        env[key] = parsed[0] if parsed else ""
    return env
