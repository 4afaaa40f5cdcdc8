"""Throwaway embedded PostgreSQL and Valkey for a test session with no servers to use.

The root conftest.py calls `start_test_servers()` when 127.0.0.1:5432 / :6379 do not answer;
everything lives in one temporary folder that `stop()` removes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ecosort_devstack import postgres, valkey
from ecosort_devstack.readiness import wait_until

READY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class EmbeddedTestServers:
    folder: Path
    postgres_url: str | None = None
    redis_url: str | None = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                # postgres: SIGINT is its fast shutdown; valkey: SIGTERM.
                os.killpg(process.pid, 2 if "postgres" in str(process.args) else 15)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _spawn(argv: list[str], log: Path, user: str | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            group=user and postgres.primary_group_name(user),
            extra_groups=[] if user else None,
        )


def start_test_servers(*, need_postgres: bool, need_redis: bool) -> EmbeddedTestServers:
    """Starts the servers asked for; returns their URLs (postgresql+psycopg://, redis://)."""
    folder = Path(tempfile.mkdtemp(prefix="ecosort-test-servers-"))
    # mkdtemp makes a 0700 folder: the unprivileged PostgreSQL user must be able to enter it.
    folder.chmod(0o755)
    servers = EmbeddedTestServers(folder)
    try:
        if need_postgres:
            user = postgres.server_user()
            if user is not None:
                postgres.make_traversable(folder, user)
            server = postgres.EmbeddedPostgres(
                postgres.reachable_distribution(folder, user),
                folder / "pg",
                free_port(),
                user,
                durable=False,
            )
            server.initialise()
            process = _spawn(server.command(), folder / "postgres.log", user)
            servers.processes.append(process)
            wait_until(
                lambda: postgres.can_connect(server.url),
                what="embedded PostgreSQL for the tests",
                timeout=READY_TIMEOUT_S,
                process=process,
                log=folder / "postgres.log",
            )
            servers.postgres_url = server.url.render_as_string(hide_password=False)
        if need_redis:
            cache = valkey.EmbeddedValkey(folder / "valkey", free_port())
            process = _spawn(cache.command(), folder / "valkey.log")
            servers.processes.append(process)
            wait_until(
                lambda: valkey.ping(cache.url),
                what="embedded Valkey for the tests",
                timeout=READY_TIMEOUT_S,
                process=process,
                log=folder / "valkey.log",
            )
            servers.redis_url = cache.url
    except BaseException:
        servers.stop()
        raise
    return servers
