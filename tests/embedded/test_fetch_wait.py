"""streamapp.embedded.tansu.IdleFetchWait: the fetch wait an idle worker asks for (pure, no broker)."""

from __future__ import annotations

from streamapp.embedded.tansu import IdleFetchWait
from tests.support import Clock


def test_the_busy_wait_holds_while_records_come_and_through_a_short_pause() -> None:
    clock = Clock()
    wait = IdleFetchWait(20, idle_ms=250, idle_after=1.0, clock=clock)
    for _ in range(10):
        clock.now += 0.02
        assert wait.after_fetch(True) == 20
    for _ in range(40):  # 0.8 s without records: still within idle_after
        clock.now += 0.02
        assert wait.after_fetch(False) == 20


def test_an_idle_wait_doubles_to_its_cap_and_one_record_restores_the_busy_wait() -> None:
    clock = Clock()
    wait = IdleFetchWait(20, idle_ms=250, idle_after=1.0, clock=clock)
    clock.now += 1.0  # the edge: idle for exactly idle_after
    assert [wait.after_fetch(False) for _ in range(5)] == [40, 80, 160, 250, 250]
    assert wait.after_fetch(True) == 20
    clock.now += 0.5
    assert wait.after_fetch(False) == 20


def test_a_busy_wait_above_the_idle_cap_is_kept() -> None:
    clock = Clock()
    wait = IdleFetchWait(1500, idle_ms=250, idle_after=1.0, clock=clock)
    clock.now += 5
    assert wait.after_fetch(False) == 1500
