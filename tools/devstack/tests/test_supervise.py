"""An API or the worker that exits by itself is started again; the rest is only reported."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from ecosort_devstack.processes import Child, ProcessGroup, StateFile, group_members, is_alive
from ecosort_devstack.supervise import RestartPolicy, Supervisor

# A parent with a child of its own, as uvicorn and Celery have.
FAMILY = ["sh", "-c", "sleep 60 & sleep 60"]
QUICK = RestartPolicy(first_delay=0.1, max_delay=0.4, stable_after=60.0)


def _starter(group: ProcessGroup, name: str, argv: list[str]) -> Callable[[], Child]:
    return lambda: group.spawn(name, argv, env=dict(os.environ), cwd=Path.cwd(), tier=3)


def _look_until(supervisor: Supervisor, condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        supervisor.check()
        if condition():
            return True
        time.sleep(0.05)
    return False


def _family_started(pid: int) -> None:
    deadline = time.monotonic() + 5
    while len(group_members(pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)


def test_a_killed_program_is_started_again_in_place_of_the_old(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "stack.json")
    group = ProcessGroup(state, tmp_path)
    said: list[str] = []
    supervisor = Supervisor(group, said.append, policy=QUICK)
    first = supervisor.supervise("api", _starter(group, "api", FAMILY))
    _family_started(first.pid)
    try:
        os.kill(first.pid, signal.SIGKILL)  # the leader only, as the OOM killer would
        assert _look_until(supervisor, lambda: any(r.pid != first.pid for r in group.records), 10)
        (record,) = group.records
        assert is_alive(record) and record.name == "api"
        # What the killed leader left in its group is ended, not left holding its work.
        assert not group_members(first.pid)
        _, written = state.read()
        assert [r.pid for r in written] == [record.pid]  # `down` finds the new one
        assert f"api (pid {first.pid}) exited (SIGKILL); starting it again in 0.1 s" in said[0]
        assert said[1] == f"api started again (pid {record.pid})"
    finally:
        group.stop_all()
    assert not group_members(record.pid)


def test_a_program_that_keeps_exiting_waits_longer_each_time(tmp_path: Path) -> None:
    group = ProcessGroup(StateFile(tmp_path / "stack.json"), tmp_path)
    said: list[str] = []
    supervisor = Supervisor(group, said.append, policy=QUICK)
    supervisor.supervise("broken", _starter(group, "broken", ["true"]))
    try:
        assert _look_until(supervisor, lambda: sum("exited" in m for m in said) >= 4, 10)
    finally:
        group.stop_all()
    delays = [m.split("again in ")[1].split(" s")[0] for m in said if "exited" in m]
    assert delays[:4] == ["0.1", "0.2", "0.4", "0.4"]  # doubling, up to the limit
    assert "(exit 0)" in said[0]


def test_the_delay_starts_over_after_a_program_ran_a_while() -> None:
    policy = RestartPolicy(first_delay=1.0, max_delay=30.0, stable_after=60.0)
    assert policy.next_delay(None, 0.0) == 1.0
    assert policy.next_delay(16.0, 5.0) == 30.0
    assert policy.next_delay(30.0, 61.0) == 1.0


def test_a_program_that_cannot_be_started_again_is_tried_again_later(tmp_path: Path) -> None:
    group = ProcessGroup(StateFile(tmp_path / "stack.json"), tmp_path)
    said: list[str] = []
    supervisor = Supervisor(group, said.append, policy=QUICK)
    starts = [["true"], ["/nonexistent/python"], ["sleep", "60"]]  # gone, then back
    supervisor.supervise(
        "worker",
        lambda: group.spawn("worker", starts.pop(0), env=dict(os.environ), cwd=tmp_path, tier=3),
    )
    try:
        assert _look_until(supervisor, lambda: any("started again" in m for m in said), 10), said
    finally:
        group.stop_all()
    assert "could not start worker again (cannot start worker (/nonexistent/python)" in said[1]
    assert said[1].endswith("next try in 0.2 s")


def test_a_process_not_supervised_is_only_reported(tmp_path: Path) -> None:
    group = ProcessGroup(StateFile(tmp_path / "stack.json"), tmp_path)
    said: list[str] = []
    supervisor = Supervisor(group, said.append, policy=QUICK)
    popen = group.spawn("postgres", ["sleep", "60"], env={}, cwd=tmp_path, tier=1)
    try:
        popen.kill()
        assert _look_until(supervisor, lambda: bool(said), 5)
        time.sleep(0.3)  # past any restart delay
        supervisor.check()
    finally:
        group.stop_all()
    assert said == [f"postgres (pid {popen.pid}) exited (SIGKILL); see {tmp_path / 'postgres.log'}"]


def test_nothing_starts_again_once_the_stack_stops(tmp_path: Path) -> None:
    group = ProcessGroup(StateFile(tmp_path / "stack.json"), tmp_path)
    said: list[str] = []
    supervisor = Supervisor(group, said.append, policy=QUICK)
    child = supervisor.supervise("api", _starter(group, "api", ["sleep", "60"]))
    os.kill(child.pid, signal.SIGKILL)
    assert _look_until(supervisor, lambda: bool(said), 5)  # seen exiting, restart pending
    group.stop_all()
    time.sleep(0.3)
    supervisor.check()
    time.sleep(0.3)
    assert group.records == []
    assert not any("started again" in message for message in said)
