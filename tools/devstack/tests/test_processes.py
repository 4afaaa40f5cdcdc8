"""Processes are recorded as they start and stopped by PID, process group included."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import psutil
import pytest

from ecosort_devstack import stack as stack_module
from ecosort_devstack.cli import run_up
from ecosort_devstack.config import StackConfig, find_repo_root
from ecosort_devstack.processes import (
    ProcessGroup,
    ProcessRecord,
    StateFile,
    group_members,
    is_alive,
    launcher_record,
    stop_records,
)
from ecosort_devstack.shutdown import down

# A parent with a child of its own, as uvicorn and Celery have.
FAMILY = ["sh", "-c", "sleep 60 & sleep 60"]
# Ignores SIGTERM (inherited by its child), so only SIGKILL ends it.
STUBBORN = ["sh", "-c", "trap '' TERM; sleep 60 & wait"]


def spawn(group: ProcessGroup, name: str, argv: list[str], tier: int = 3) -> ProcessRecord:
    popen = group.spawn(name, argv, env=dict(os.environ), cwd=Path.cwd(), tier=tier)
    deadline = time.monotonic() + 5
    while len(group_members(popen.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    return next(r for r in group.records if r.pid == popen.pid)


def test_stop_all_ends_every_process_of_every_group(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "stack.json")
    group = ProcessGroup(state, tmp_path)
    records = [spawn(group, "a", FAMILY, tier=1), spawn(group, "b", FAMILY, tier=3)]
    _, written = state.read()
    assert [r.pid for r in written] == [r.pid for r in records]  # recorded as they started
    assert all(len(group_members(r.pid)) >= 2 for r in records)
    group.stop_all()
    assert not any(group_members(r.pid) for r in records)
    assert not state.path.exists()


def test_a_process_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    group = ProcessGroup(StateFile(tmp_path / "stack.json"), tmp_path)
    record = spawn(group, "stubborn", STUBBORN)
    started = time.monotonic()
    stop_records([record], timeout=0.5)
    assert not group_members(record.pid)
    assert time.monotonic() - started < 5
    group.stop_all()


def _kill_leader(record: ProcessRecord) -> None:
    os.kill(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while is_alive(record) and time.monotonic() < deadline:
        time.sleep(0.02)


def test_what_a_leader_killed_just_before_the_stop_left_is_stopped(tmp_path: Path) -> None:
    # nginx's workers outlive their master, Celery's pool process its main process: killed
    # within the supervisor's interval before Ctrl-C, they held the port with no record left.
    state = StateFile(tmp_path / "stack.json")
    group = ProcessGroup(state, tmp_path)
    record = spawn(group, "gateway", FAMILY)
    _kill_leader(record)
    group.stop_all()
    assert not group_members(record.pid)
    assert not state.path.exists()


def test_down_stops_what_a_dead_leader_left(tmp_path: Path) -> None:
    config = StackConfig(repo=Path.cwd(), home=tmp_path)
    state = StateFile(config.state_file)
    group = ProcessGroup(state, tmp_path)
    record = spawn(group, "gateway", FAMILY)
    _kill_leader(record)  # and then the launcher, before it looked
    state.write(ProcessRecord("ecosort-stack", 2**22 + 1, 0.0, signal.SIGTERM, 99), group.records)
    messages: list[str] = []
    try:
        assert down(config, say=messages.append) == 0, messages
        assert not group_members(record.pid)
    finally:
        group.stop_all()


def test_a_reused_pid_is_not_ours() -> None:
    me = launcher_record()
    assert is_alive(me)
    assert not is_alive(ProcessRecord("x", me.pid, me.create_time - 100, signal.SIGTERM, 1))


def test_down_stops_what_a_killed_launcher_left(tmp_path: Path) -> None:
    config = StackConfig(repo=Path.cwd(), home=tmp_path)
    state = StateFile(config.state_file)
    group = ProcessGroup(state, tmp_path)
    record = spawn(group, "orphan", FAMILY)
    # The file as a launcher that died with SIGKILL would leave it: launcher gone, child alive.
    dead_launcher = ProcessRecord("ecosort-stack", 2**22 + 1, 0.0, signal.SIGTERM, 99)
    state.write(dead_launcher, group.records)
    messages: list[str] = []
    assert down(config, say=messages.append) == 0
    assert not group_members(record.pid)
    assert not state.path.exists()
    assert "stopped 1 processes" in messages[-1]


def test_down_without_a_stack_says_so(tmp_path: Path) -> None:
    messages: list[str] = []
    assert down(StackConfig(repo=Path.cwd(), home=tmp_path), say=messages.append) == 0
    assert "no stack is running" in messages[0]


def test_spawn_after_stop_is_refused(tmp_path: Path) -> None:
    group = ProcessGroup(StateFile(tmp_path / "stack.json"), tmp_path)
    group.stop_all()
    try:
        group.spawn("late", [sys.executable, "-c", "pass"], env={}, cwd=tmp_path, tier=1)
    except Exception as exc:
        assert "stopping" in str(exc)
    else:
        raise AssertionError("a process started after stop_all()")


def test_an_exited_but_unreaped_process_is_not_alive(tmp_path: Path) -> None:
    # `down` waits for the launcher to exit; its parent (a shell, pytest) may reap it later.
    group = ProcessGroup(StateFile(tmp_path / "stack.json"), tmp_path)
    popen = group.spawn("brief", ["true"], env={}, cwd=tmp_path, tier=1)
    record = group.records[0]
    deadline = time.monotonic() + 5
    while is_alive(record) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not is_alive(record)
    assert popen.returncode is None  # still unreaped: a zombie
    group.stop_all()


def test_a_second_interrupt_does_not_cut_the_teardown_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = ProcessGroup(StateFile(tmp_path / "stack.json"), tmp_path)
    server = spawn(group, "server", FAMILY)
    stopped: list[bool] = []

    class InterruptedStack:
        """Ctrl-C while starting, then Ctrl-C again and SIGTERM (what `timeout` sends to the
        whole process group) while the servers are being stopped."""

        def __init__(self, config: StackConfig, say: object) -> None:
            pass

        def up(self) -> None:
            raise KeyboardInterrupt

        def stop(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            stop_records(group.records)
            stopped.append(True)

    monkeypatch.setattr(stack_module, "Stack", InterruptedStack)
    term_before = signal.getsignal(signal.SIGTERM)
    int_before = signal.getsignal(signal.SIGINT)

    try:
        assert run_up(cast(StackConfig, None)) == 0
    except KeyboardInterrupt:
        pytest.fail("the second interrupt escaped the teardown")
    finally:
        stop_records(group.records)  # whatever a failed teardown left behind
        term_after = signal.signal(signal.SIGTERM, term_before)
        int_after = signal.signal(signal.SIGINT, int_before)

    assert stopped == [True]
    assert not group_members(server.pid), "the teardown must end every server"
    assert term_after is term_before and int_after is int_before, "handlers restored"


# The launcher as the terminal runs it: starts the forkserver as `up` does, says its PID, and
# lives on (the forkserver exits with it), surviving Ctrl-C as `up` does with its teardown.
LAUNCHER = """
import multiprocessing.forkserver, signal, time
from ecosort_devstack import preload
signal.signal(signal.SIGINT, lambda signum, frame: None)
preload.start_forkserver()
print(multiprocessing.forkserver._forkserver._forkserver_pid, flush=True)
time.sleep(60)
"""


def test_ctrl_c_while_the_forkserver_imports_leaves_it_running() -> None:
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a terminal's foreground process group
    )
    try:
        assert launcher.stdout is not None
        forkserver = psutil.Process(int(launcher.stdout.readline()))
        os.killpg(launcher.pid, signal.SIGINT)  # Ctrl-C, during its preload imports
        time.sleep(3)  # longer than those imports
        assert forkserver.status() != psutil.STATUS_ZOMBIE, "Ctrl-C ended the forkserver"
    finally:
        os.killpg(launcher.pid, signal.SIGKILL)
        _, errors = launcher.communicate(timeout=10)
    assert "KeyboardInterrupt" not in errors


def test_make_clean_stops_a_running_stack_before_deleting_it(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    (clone / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(find_repo_root(Path(__file__).parent) / "Makefile", clone)
    launcher = Path(sys.executable).parent / "ecosort-stack"
    (clone / ".venv" / "bin" / "ecosort-stack").symlink_to(launcher)
    home = clone / ".local"
    home.mkdir()
    state = StateFile(home / "stack.json")
    group = ProcessGroup(state, home)
    server = spawn(group, "server", FAMILY)
    # Launched from another terminal (not this test's process, which `down` would stop).
    state.write(ProcessRecord("ecosort-stack", 2**22 + 1, 0.0, signal.SIGTERM, 99), group.records)
    try:
        subprocess.run(["make", "-C", str(clone), "clean"], check=True, capture_output=True)
        assert not group_members(server.pid), "the servers were left running"
    finally:
        stop_records(group.records)
    assert not home.exists() and launcher.exists()
