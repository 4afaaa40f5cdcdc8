"""Child processes of the stack: started in their own process groups, recorded, stopped by PID.

Each child gets a new session (its own process group) so that Ctrl-C in the terminal reaches
only the launcher, which then stops the children in order, and so that a stop signal sent to
the group also reaches what the child started (uvicorn's and Celery's own children).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import psutil

from ecosort_devstack.errors import StackError

STOP_TIMEOUT_S = 10.0


class Child(Protocol):
    """What the launcher needs of a started process: a `subprocess.Popen`, or a service forked
    from the preloading forkserver (`preload.ForkedProcess`)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int | None: ...


@dataclass(frozen=True)
class ProcessRecord:
    """What `down` needs to find and stop a process, even from another terminal."""

    name: str
    pid: int
    create_time: float  # tells our process apart from a later one that reused the PID
    stop_signal: int
    tier: int  # stopped from the highest tier down: gateway, apps, then data servers
    port: int | None = None


def is_alive(record: ProcessRecord) -> bool:
    try:
        process = psutil.Process(record.pid)
        # create_time is rounded differently by psutil across calls; a second is plenty.
        return (
            abs(process.create_time() - record.create_time) < 1.0
            and process.status() != psutil.STATUS_ZOMBIE  # exited, its parent has not reaped it
        )
    except psutil.Error:
        return False


def group_members(pgid: int) -> list[psutil.Process]:
    """Every live process in a process group (psutil has no pgid filter, so ask the kernel)."""
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
    return members


def _leader_running(record: ProcessRecord) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(record.pid, os.WNOHANG)  # reap it if it is our child
    try:
        return psutil.Process(record.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def left_running(record: ProcessRecord) -> bool:
    """Whether anything of `record` still runs: the process, or what it left in its group when
    it exited (nginx's workers, Celery's pool process, which outlive a leader killed with
    SIGKILL and go on holding its port or its task)."""
    if is_alive(record):
        return True
    # A PID in use as a group's ID is not given to a new process: members are what it left,
    # unless the PID was free and a new process took it (then running, and not ours).
    return not _leader_running(record) and bool(group_members(record.pid))


def _signal_leader(record: ProcessRecord, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(record.pid, sig)


def _signal_group(record: ProcessRecord, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record.pid, sig)


def stop_records(
    records: Iterable[ProcessRecord],
    timeout: float = STOP_TIMEOUT_S,
    say: Callable[[str], None] | None = None,
) -> None:
    """Stops the processes tier by tier: each group gets its stop signal, then SIGKILL."""
    by_tier: dict[int, list[ProcessRecord]] = {}
    for record in records:
        by_tier.setdefault(record.tier, []).append(record)
    for tier in sorted(by_tier, reverse=True):
        # A leader that exited just before (before the supervisor's look) is still stopped:
        # its group gets the stop signal in the loop below, as a leader's that exits there.
        alive = [record for record in by_tier[tier] if left_running(record)]
        started = time.monotonic()
        # The leader first: uvicorn, Celery, nginx and PostgreSQL stop their own children in
        # order. Whatever a leader leaves behind gets the same signal, then SIGKILL.
        for record in alive:
            _signal_leader(record, record.stop_signal)
        orphaned: set[int] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(group_members(r.pid) for r in alive):
            for record in alive:
                if record.pid not in orphaned and not _leader_running(record):
                    orphaned.add(record.pid)
                    _signal_group(record, record.stop_signal)
            time.sleep(0.05)
        killed = [record for record in alive if group_members(record.pid)]
        for record in killed:
            _signal_group(record, signal.SIGKILL)
        if say is not None and alive:
            names = ", ".join(record.name for record in alive)
            forced = f" (killed after {timeout:.0f} s: {', '.join(r.name for r in killed)})"
            say(
                f"  stopped {names} in {time.monotonic() - started:.1f} s{forced if killed else ''}"
            )
        # SIGKILL is delivered asynchronously; wait until the kernel has ended them.
        deadline = time.monotonic() + 2.0
        while killed and time.monotonic() < deadline and any(group_members(r.pid) for r in killed):
            for record in killed:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(record.pid, os.WNOHANG)
            time.sleep(0.02)
        # Reap our own children so none is left as a zombie holding its PID.
        for record in alive:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(record.pid, os.WNOHANG)


@dataclass
class StateFile:
    """The JSON file naming the launcher and every process it started (the `down` contract)."""

    path: Path

    def write(self, launcher: ProcessRecord, records: Sequence[ProcessRecord]) -> None:
        payload = {"launcher": asdict(launcher), "processes": [asdict(r) for r in records]}
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(payload, indent=2))
        temporary.replace(self.path)  # atomic: `down` never reads half a file

    def read(self) -> tuple[ProcessRecord | None, list[ProcessRecord]]:
        if not self.path.exists():
            return None, []
        try:
            payload = json.loads(self.path.read_text())
            launcher = ProcessRecord(**payload["launcher"])
            records = [ProcessRecord(**item) for item in payload["processes"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise StackError(f"{self.path} is not a state file of ecosort-stack ({exc})") from exc
        return launcher, records

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def record_of(
    popen: Child, name: str, stop_signal: int, tier: int, port: int | None
) -> ProcessRecord:
    try:
        created = psutil.Process(popen.pid).create_time()
    except psutil.Error:
        created = time.time()  # already gone; is_alive() will say so
    return ProcessRecord(name, popen.pid, created, stop_signal, tier, port)


def launcher_record() -> ProcessRecord:
    me = psutil.Process(os.getpid())
    return ProcessRecord("ecosort-stack", me.pid, me.create_time(), signal.SIGTERM, 99)


class ProcessGroup:
    """The processes of one stack run, kept in the state file as they start."""

    def __init__(self, state: StateFile, logs_dir: Path) -> None:
        self._state = state
        self._logs_dir = logs_dir
        self._lock = threading.Lock()
        self._records: list[ProcessRecord] = []
        self._popens: dict[int, Child] = {}
        self._launcher = launcher_record()
        self.stopping = threading.Event()
        self._owns_state = False  # a refused second `up` must not delete the running one's file

    def log_path(self, name: str) -> Path:
        return self._logs_dir / f"{name}.log"

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        tier: int,
        stop_signal: int = signal.SIGTERM,
        port: int | None = None,
        user: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Starts `argv` with its output in logs/<name>.log and records it before returning."""
        with self._lock:
            if self.stopping.is_set():
                raise StackError(f"not starting {name}: the stack is stopping")
            log = self.log_path(name).open("ab")
            try:
                popen = subprocess.Popen(
                    list(argv),
                    env=dict(env),
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    user=user,
                    group=user and _primary_group(user),
                    extra_groups=[] if user else None,
                )
            except OSError as exc:
                raise StackError(f"cannot start {name} ({argv[0]}): {exc}") from exc
            finally:
                log.close()  # the child holds its own copy of the descriptor
            self._remember(popen, name, stop_signal, tier, port)
            return popen

    def spawn_forked(
        self,
        name: str,
        start: Callable[[Path], Child],
        *,
        tier: int,
        port: int | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> Child:
        """Like `spawn`, for a process that `start` forks (given its log path)."""
        with self._lock:
            if self.stopping.is_set():
                raise StackError(f"not starting {name}: the stack is stopping")
            child = start(self.log_path(name))
            self._remember(child, name, stop_signal, tier, port)
            return child

    def _remember(
        self, child: Child, name: str, stop_signal: int, tier: int, port: int | None
    ) -> None:
        self._records.append(record_of(child, name, stop_signal, tier, port))
        self._popens[child.pid] = child
        self._state.write(self._launcher, self._records)
        self._owns_state = True

    def forget(self, popen: Child) -> None:
        """Drops a process that ended by itself (a finished migration)."""
        with self._lock:
            self._records = [r for r in self._records if r.pid != popen.pid]
            self._popens.pop(popen.pid, None)
            self._state.write(self._launcher, self._records)

    def discard(self, record: ProcessRecord) -> int | None:
        """Drops a process whose leader exited, ending first what it left in its group (Celery's
        pool process outlives a main process killed with SIGKILL, still holding its task);
        returns the leader's exit status when known (negative: the signal that ended it)."""
        _signal_group(record, signal.SIGKILL)
        with self._lock:
            self._records = [r for r in self._records if r.pid != record.pid]
            child = self._popens.pop(record.pid, None)
            self._state.write(self._launcher, self._records)
        if child is None:
            return None
        # Reaped here, and its status known: a leader that looks exited may still be waiting
        # for its other threads to end, which the kernel does before it can be reaped.
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=1.0)
        return child.poll()

    @property
    def records(self) -> list[ProcessRecord]:
        with self._lock:
            return list(self._records)

    def stop_all(self, say: Callable[[str], None] | None = None) -> None:
        """Stops every process started so far; no new one starts after this."""
        self.stopping.set()
        with self._lock:
            records = list(self._records)
        stop_records(records, say=say)
        for popen in self._popens.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=1)
        with self._lock:
            self._records.clear()
            self._popens.clear()
            if self._owns_state:
                self._state.remove()


def _primary_group(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid
