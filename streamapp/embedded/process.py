"""Child processes of the embedded stack: start, wait until ready, stop.

Each service (broker, S3 server, predictor, worker) runs as a child process
in its own process group, with its output appended to a log file, so that a
stop (or a test's teardown) ends it and everything it started.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)


class ServiceFailed(RuntimeError):
    """A child service exited early or did not become ready in time."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound right now (no listener, no socket holding it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ManagedProcess:
    """One child process with a name, a log file and a clean stop."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            log.debug("starting %s: %s", self.name, " ".join(self.argv))
            self.proc = subprocess.Popen(  # noqa: S603 (argv built by us, no shell)
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # own process group: stop() reaches its children
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def cpu_seconds(self) -> float | None:
        """User + system CPU the process (all its threads) has used; None if gone or not Linux."""
        if self.proc is None:
            return None
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return None
        # fields after the parenthesized command name: utime and stime are 14 and 15
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check(self) -> None:
        """Raise ``ServiceFailed`` with the log's tail if the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise ServiceFailed(
                f"{self.name} exited with code {self.proc.returncode}; last lines of {self.log_path}:\n{self.log_tail()}"
            )

    def wait_port(self, host: str, port: int, timeout: float = 30.0) -> None:
        """Block until ``host:port`` accepts connections, or raise ``ServiceFailed``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            if port_open(host, port):
                return
            time.sleep(0.05)
        raise ServiceFailed(f"{self.name} did not open {host}:{port} within {timeout:.0f}s:\n{self.log_tail()}")

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.running():
            os.killpg(self.proc.pid, signum)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout``; return the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs: killing it", self.name, timeout)
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                self.proc.wait()
        else:
            # the leader exited; still end anything left in its group
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        return self.proc.returncode
