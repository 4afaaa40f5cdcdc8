"""`ecosort-stack down`: stops a stack started in another terminal, by the PIDs it recorded.

Kept apart from stack.py so that `down` imports nothing heavy and answers quickly.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from ecosort_devstack.config import StackConfig
from ecosort_devstack.processes import (
    StateFile,
    group_members,
    is_alive,
    left_running,
    stop_records,
)
from ecosort_devstack.readiness import port_is_listening

Say = Callable[[str], None]


def down(config: StackConfig, say: Say = print, timeout: float = 40.0) -> int:
    """Stops a stack started from another terminal: asks its launcher, then checks every PID."""
    state = StateFile(config.state_file)
    launcher, records = state.read()
    if launcher is None:
        say(f"no stack is running from {config.home}")
        return 0
    if is_alive(launcher):
        os.kill(launcher.pid, signal.SIGTERM)  # the launcher stops its children in order
        deadline = time.monotonic() + timeout
        while is_alive(launcher) and time.monotonic() < deadline:
            time.sleep(0.05)
    # Whatever is still there (the launcher was killed, or did not finish): stop it by PID.
    stop_records([record for record in records if left_running(record)], say=say)
    state.remove()
    left = [r for r in records if group_members(r.pid)]
    busy = [r for r in records if r.port is not None and port_is_listening(r.port)]
    if left or busy:
        names = ", ".join(f"{r.name} (pid {r.pid})" for r in left)
        ports = ", ".join(f"{r.port} ({r.name})" for r in busy)
        say(f"could not stop everything: processes {names or '-'}; ports {ports or '-'}")
        return 1
    say(f"stopped {len(records)} processes of the stack in {config.home}")
    return 0
