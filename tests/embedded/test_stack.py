"""The embedded stack's process bookkeeping, without starting it."""

from __future__ import annotations

import pytest


def test_further_workers_get_a_free_web_port_and_keep_it(tmp_path):
    """Worker i listens on web_port + i unless that port is taken (a test's
    stack once lost worker 1 to an outgoing connection holding it)."""
    import socket

    from streamapp.embedded.process import free_port, port_free
    from streamapp.embedded.stack import HOST, Stack, StackConfig

    base = free_port(HOST)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        try:
            taken.bind((HOST, base + 1))
        except OSError:
            pytest.skip(f"port {base + 1} is in use already")
        stack = Stack(StackConfig(data_dir=tmp_path, web_port=base))
        assert not port_free(HOST, base + 1)
        assert stack.web_port(0) == base  # the configured port is the user's to choose
        second = stack.web_port(1)
        assert second != base + 1 and port_free(HOST, second)
    assert stack.web_port(1) == second  # a restarted worker keeps its address
