"""The APIs and the worker are started again when they exit by themselves, as Kubernetes
restarts a pod's container.

Without it, one API killed (kill -9, the OOM killer, a crash) left the gateway answering 502
until the whole stack was restarted, and a lost worker took the reaper with it: every analysis
from then on stayed `queued`, its event stream sending heartbeats for ever. The data servers
and the gateway are only reported: the stack cannot work around them, and starting them again
is a decision about their data.

A program that keeps exiting is started again with a growing delay, like Kubernetes'
CrashLoopBackOff on a laptop's scale, so that a service broken at start does not spin a core.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ecosort_devstack.processes import Child, ProcessGroup, ProcessRecord, is_alive

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
# A program that ran this long before it exited is not crash-looping: the delay starts over.
STABLE_AFTER_S = 60.0

Start = Callable[[], Child]


@dataclass(frozen=True)
class RestartPolicy:
    first_delay: float = FIRST_DELAY_S
    max_delay: float = MAX_DELAY_S
    stable_after: float = STABLE_AFTER_S

    def next_delay(self, previous: float | None, ran_for: float) -> float:
        if previous is None or ran_for >= self.stable_after:
            return self.first_delay
        return min(previous * 2, self.max_delay)


@dataclass
class _Program:
    start: Start
    pid: int
    started_at: float
    delay: float | None = None  # the last delay used, None before the first restart
    due_at: float | None = None  # when it is to start again; None while it runs or starts


@dataclass
class Supervisor:
    """Watches the stack's processes; starts those added with `supervise` again when they end."""

    group: ProcessGroup
    say: Callable[[str], None]
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    clock: Callable[[], float] = time.monotonic
    _programs: dict[str, _Program] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def supervise(self, name: str, start: Start) -> Child:
        """Starts `name` with `start`, and again with it whenever it exits by itself."""
        child = start()
        with self._lock:
            self._programs[name] = _Program(start, child.pid, self.clock())
        return child

    def check(self) -> None:
        """One look: report what exited, start again what is due."""
        for record in self.group.records:
            if not is_alive(record):
                self._exited(record)  # no longer among the records once seen
        now = self.clock()
        with self._lock:
            due = [
                (name, program)
                for name, program in self._programs.items()
                if program.due_at is not None and program.due_at <= now
            ]
            for _, program in due:
                program.due_at = None
        for name, program in due:
            # On a thread: a Ctrl-C in the main thread must not land between the start and its
            # record, which would leave the new process running after the teardown. The
            # group's lock orders the start against stop_all, as at start-up.
            threading.Thread(
                target=self._start_again, args=(name, program), name=f"restart-{name}", daemon=True
            ).start()

    def _exited(self, record: ProcessRecord) -> None:
        log = self.group.log_path(record.name)
        status = _describe(self.group.discard(record))
        with self._lock:
            program = self._programs.get(record.name)
            if program is None or program.pid != record.pid:
                self.say(f"{record.name} (pid {record.pid}) exited{status}; see {log}")
                return
            program.delay = self.policy.next_delay(program.delay, self.clock() - program.started_at)
            program.due_at = self.clock() + program.delay
            delay = program.delay
        self.say(
            f"{record.name} (pid {record.pid}) exited{status}; starting it again in "
            f"{delay:g} s (see {log})"
        )

    def _start_again(self, name: str, program: _Program) -> None:
        try:
            child = program.start()
        except Exception as exc:  # the next look tries again, later
            # Not only the stop's refusal is a StackError: so is a program that cannot be
            # started (its interpreter gone with a `uv sync`, no process left to fork), which
            # taken for the stop was never tried again, and not a word said.
            if self.group.stopping.is_set():
                return
            with self._lock:
                program.delay = self.policy.next_delay(program.delay, 0.0)
                program.due_at = self.clock() + program.delay
            self.say(f"could not start {name} again ({exc}); next try in {program.delay:g} s")
            return
        with self._lock:
            program.pid, program.started_at = child.pid, self.clock()
        self.say(f"{name} started again (pid {child.pid})")


def _describe(returncode: int | None) -> str:
    if returncode is None:
        return ""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f" ({signal.Signals(-returncode).name})"
    return f" (exit {returncode})"
