"""Waiting for things to be ready, and checking that ports are free before starting."""

from __future__ import annotations

import errno
import random
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ecosort_devstack.errors import StackError
from ecosort_devstack.processes import Child

POLL_INTERVAL_S = 0.2


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR as the servers set it: a port in TIME_WAIT is free for them too.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def port_is_listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


def require_free_ports(ports: dict[int, str]) -> None:
    """Fails naming the first port (and what wanted it) that something else already holds."""
    for port, owner in sorted(ports.items()):
        if not port_is_free(port):
            raise StackError(
                f"port {port} ({owner}) is already in use: stop what holds it, or move every port "
                "of the stack with ECOSORT_STACK_PORT_OFFSET (e.g. ECOSORT_STACK_PORT_OFFSET=1000)"
            )


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


def wait_until(
    check: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    process: Child | None = None,
    log: Path | None = None,
    abort: threading.Event | None = None,
) -> None:
    """Polls `check` until it is true; fails early if `process` exits, naming its log.

    `abort` is the stack's "stopping" flag: another part failed, so stop waiting at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        if abort is not None and abort.is_set():
            raise StackError(f"stopped waiting for {what}: the stack is stopping")
        if process is not None and process.poll() is not None:
            tail = f"; last lines of {log}:\n{log_tail(log)}" if log else ""
            raise StackError(f"{what} exited with code {process.returncode} during start-up{tail}")
        if check():
            return
        if time.monotonic() > deadline:
            tail = f"; see {log}:\n{log_tail(log)}" if log else ""
            raise StackError(f"{what} was not ready after {timeout:.0f} s{tail}")
        time.sleep(POLL_INTERVAL_S)


def http_ok(url: str) -> Callable[[], bool]:
    import httpx  # here, not at the top: `ecosort-stack down` needs none of it

    # One client for all polls: a new httpx client per poll costs an SSL context each time.
    client = httpx.Client(timeout=1.0, trust_env=False)

    def check() -> bool:
        try:
            return client.get(url).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def tcp_open(port: int) -> Callable[[], bool]:
    return lambda: port_is_listening(port)


def free_port_offset(low: int = 10000, high: int = 24000) -> int:
    """An ECOSORT_STACK_PORT_OFFSET at which the gateway's and all services' ports are free.

    The default range keeps every port below 32768, where the kernel's ephemeral ports (the
    local ends of outgoing connections) start, so a client socket cannot take one meanwhile.
    """
    from ecosort_devstack.config import GATEWAY_PORT, SERVICE_PORTS

    for _ in range(100):
        offset = random.randrange(low, high, 10)
        ports = [GATEWAY_PORT + offset, *(port + offset for port in SERVICE_PORTS.values())]
        if all(port_is_free(port) for port in ports):
            return offset
    raise StackError(f"no free set of stack ports with an offset in [{low}, {high})")
