"""stack.env holds all a further worker needs: one started by hand, from that file
alone plus its own port and data dir, joins the group and serves the same counts."""

from __future__ import annotations

import os
import sys
import urllib.request
from collections import Counter

import pytest

from streamapp.embedded.process import ManagedProcess, free_port
from streamapp.embedded.stack import read_env_file
from tests.support import (
    SETTLE,
    digit_counts,
    http_json,
    running_stack,
    tricky_copies,
    upload_files,
    wait_counts,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_a_worker_started_by_hand_from_stack_env_joins_and_serves_the_same_counts(tmp_path, samples):
    with running_stack(tmp_path / "stack", partitions=4) as stack:
        labels = tricky_copies(samples[:12], tmp_path / "images", folder="by-hand")
        upload_files(stack, [tmp_path / "images"], prefix="by-hand/")
        expected = wait_counts(stack, Counter(labels.values()))

        env = read_env_file(stack.env_file)
        assert {"BROKER_URL", "AWS_ENDPOINT_URL_S3", "STREAMAPP_PREDICTOR_URL", "STREAMAPP_SOURCE_BUCKETS",
                "TOPIC_PARTITIONS"} <= env.keys()
        port = free_port()
        # nothing of the stack's own environment: PATH for the interpreter, the file, a port and a data dir
        env.update(PATH=os.environ["PATH"], WEB_PORT=str(port), APP_DATADIR=str(tmp_path / "by-hand"))
        extra = ManagedProcess("by-hand", [sys.executable, "-m", "faust", "-A", "streamapp", "worker", "-l", "info"],
                               log_path=tmp_path / "by-hand.log", env=env).start()
        try:
            url = f"http://127.0.0.1:{port}"

            def serving_its_share() -> dict | None:
                extra.check()
                try:
                    stats = http_json(url + "/stats/")
                except OSError:
                    return None
                sources = stats["worker"]["partitions"].values()
                return stats if "local" in sources and len(sources) == 4 else None

            stats = wait_for(serving_its_share, timeout=SETTLE + 30, what="the worker started by hand to join")
            mine = {p for p, source in stats["worker"]["partitions"].items() if source == "local"}
            assert mine, stats["worker"]["partitions"]
            with urllib.request.urlopen(url + "/digits/", timeout=5) as response:  # noqa: S310 (loopback)
                assert response.status == 200
            assert Counter({int(d): n for d, n in http_json(url + "/digits/").items() if n}) == expected
            assert digit_counts(stack) == expected
        finally:
            extra.stop()
