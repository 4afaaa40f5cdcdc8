"""What the stack is made of: the services, their ports, and the launcher's own settings.

Every setting can come from the environment so that tests (and a second stack on the same
machine) can move ports, folders and database names without touching the code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# The five services and their local ports (docs/conventions.md). The order is the start order
# of nothing in particular: they start in parallel; it is the order of the printed summary.
SERVICE_PORTS: dict[str, int] = {
    "auth": 8101,
    "users": 8102,
    "waste": 8103,
    "recycling": 8104,
    "locations": 8105,
}
GATEWAY_PORT = 8080
EMBEDDED_POSTGRES_PORT = 55432
EMBEDDED_VALKEY_PORT = 56379

# The Celery worker runs with the waste service's settings.
WORKER_SERVICE = "waste"
WORKER_MODULE = "ecosort_waste.worker"
WORKER_QUEUE = "analyses"


def find_repo_root(start: Path | None = None) -> Path:
    """The workspace root: the nearest folder above `start` holding ingress/ and uv.lock."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "uv.lock").is_file() and (folder / "ingress").is_dir():
            return folder
    # Installed in editable mode the package sits at <repo>/tools/devstack/src/ecosort_devstack.
    package_root = Path(__file__).resolve().parents[4]
    if (package_root / "ingress").is_dir():
        return package_root
    raise FileNotFoundError(f"no EcoSort workspace (uv.lock + ingress/) above {here}")


@dataclass(frozen=True)
class StackConfig:
    """Settings of one stack run, resolved once at start-up."""

    repo: Path
    home: Path  # everything the stack writes: data, logs, state (default <repo>/.local)
    port_offset: int = 0
    database_prefix: str = "ecosort_"
    external_database_url: str | None = None  # DATABASE_URL: use that server, start none
    external_redis_url: str | None = None  # REDIS_URL: use that server, start none
    # waste's CELERY_KEY_PREFIX (kombu's global_keyprefix): the Redis ACL grants the broker's
    # keys under it.
    celery_key_prefix: str = ""
    # The embedded Valkey's port, when not the default plus the offset (a high offset would
    # push 56379 past 65535).
    valkey_port_setting: int | None = None
    rate_limit: bool = True  # the Ingress limit-rps annotations; benchmarks switch it off
    with_worker: bool = True
    always_migrate: bool = False  # else migrate only databases behind their migrations
    services: tuple[str, ...] = field(default=tuple(SERVICE_PORTS))

    @classmethod
    def from_env(
        cls, repo: Path | None = None, environ: dict[str, str] | None = None
    ) -> StackConfig:
        env = os.environ if environ is None else environ
        root = repo or find_repo_root()
        home = Path(env.get("ECOSORT_STACK_HOME") or root / ".local").resolve()
        return cls(
            repo=root,
            home=home,
            port_offset=int(env.get("ECOSORT_STACK_PORT_OFFSET", "0")),
            database_prefix=env.get("ECOSORT_STACK_DB_PREFIX", "ecosort_"),
            external_database_url=env.get("DATABASE_URL") or None,
            external_redis_url=env.get("REDIS_URL") or None,
            # pydantic-settings reads names case-insensitively; so does this.
            celery_key_prefix=next(
                (value for name, value in env.items() if name.upper() == "CELERY_KEY_PREFIX"), ""
            ),
            rate_limit=env.get("ECOSORT_GATEWAY_RATE_LIMIT", "on").lower() not in {"off", "0"},
            with_worker=env.get("ECOSORT_STACK_WORKER", "on").lower() not in {"off", "0"},
            always_migrate=env.get("ECOSORT_STACK_MIGRATE", "").lower() == "always",
            valkey_port_setting=int(env["ECOSORT_STACK_VALKEY_PORT"])
            if env.get("ECOSORT_STACK_VALKEY_PORT")
            else None,
        )

    # Ports, all moved together by the offset so a second stack never collides with the first.
    def service_port(self, service: str) -> int:
        return SERVICE_PORTS[service] + self.port_offset

    @property
    def gateway_port(self) -> int:
        return GATEWAY_PORT + self.port_offset

    @property
    def postgres_port(self) -> int:
        return EMBEDDED_POSTGRES_PORT + self.port_offset

    @property
    def valkey_port(self) -> int:
        if self.valkey_port_setting is not None:
            return self.valkey_port_setting
        return EMBEDDED_VALKEY_PORT + self.port_offset

    # Folders under home.
    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def state_file(self) -> Path:
        return self.home / "stack.json"

    @property
    def postgres_dir(self) -> Path:
        return self.home / "postgres"

    @property
    def valkey_dir(self) -> Path:
        return self.home / "valkey"

    @property
    def nginx_dir(self) -> Path:
        return self.home / "nginx"

    def data_dir(self, service: str) -> Path:
        return self.home / "data" / service

    def database_name(self, service: str) -> str:
        return f"{self.database_prefix}{service}"
