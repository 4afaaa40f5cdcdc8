"""The environment each process of the stack gets: the one table of the local settings.

Values are layered: the launcher's own environment (so a service's other settings can be set
in the terminal), then this table. Service engineers add their local settings here.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Mapping
from pathlib import Path

from ecosort_devstack.config import StackConfig
from ecosort_devstack.redis_acl import USERS as REDIS_USERS

# Secrets a service refuses to start without (or should not run on a shared default): made
# once per stack home, kept in <home>/secrets.json (0600) so they survive restarts: the auth
# signing keys stored in the database stay readable. A value in the environment wins.
GENERATED_SECRETS = ("AUTH_KEY_ENCRYPTION_KEY", "UPLOAD_SIGNING_KEY")
# The passwords of the embedded Valkey's ACL users (redis_acl.py), made and kept the same way.
# They are no service's variables: each service gets its own password inside its REDIS_URL only.
REDIS_PASSWORDS = {user: f"REDIS_ACL_PASSWORD_{user.upper()}" for user in REDIS_USERS}


_SECRETS_LOCK = threading.Lock()  # the service pipelines start on parallel threads


def local_secrets(home: Path) -> dict[str, str]:
    with _SECRETS_LOCK:
        return _load_or_create_secrets(home / "secrets.json")


def redis_passwords(home: Path) -> dict[str, str]:
    """Each Redis ACL user's password in the local stack (user -> password)."""
    stored = local_secrets(home)
    return {user: stored[name] for user, name in REDIS_PASSWORDS.items()}


def _load_or_create_secrets(path: Path) -> dict[str, str]:
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    wanted = (*GENERATED_SECRETS, *REDIS_PASSWORDS.values())
    missing = [name for name in wanted if name not in stored]
    if missing:
        stored.update({name: secrets.token_urlsafe(32) for name in missing})
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.touch(mode=0o600)
        temporary.write_text(json.dumps(stored, indent=2))
        temporary.replace(path)
    return stored


def seed_dir(config: StackConfig) -> Path:
    """The public collection-point data, in the shared folder beside the clone."""
    return config.repo / ".." / "shared" / "data" / "collection-points"


def missing_data(config: StackConfig, environ: Mapping[str, str] | None = None) -> list[str]:
    """What the stack starts without, for the summary: a clone without ../shared beside it
    would otherwise give locations an empty map and no word why."""
    env = os.environ if environ is None else environ
    folder = seed_dir(config)
    if "locations" not in config.services or folder.is_dir():
        return []
    if any(name.upper() == "COLLECTION_POINTS_SEED_DIR" for name in env):
        return []
    return [
        f"no {folder.resolve()}: locations starts without collection points (put the shared "
        "data folder beside the clone and run `make run` again to import them)"
    ]


def service_env(
    config: StackConfig,
    service: str,
    *,
    database_url: str,
    redis_url: str,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of `service` (its migrations, its API and, for waste, the worker)."""
    gateway = f"http://127.0.0.1:{config.gateway_port}"
    table = {
        "DATABASE_URL": database_url,  # this service's own database
        # One Redis DB for all (events travel on its Streams); in the embedded Valkey, as the
        # service's own ACL user.
        "REDIS_URL": redis_url,
        "JWKS_URL": f"http://127.0.0.1:{config.service_port('auth')}/api/v1/auth/jwks.json",
        "JWT_ISSUER": gateway,
        "JWT_AUDIENCE": "ecosort",
        "AUTH_DEV_LOGIN_ENABLED": "true",
        "RECYCLING_URL": f"http://127.0.0.1:{config.service_port('recycling')}",
        "PUBLIC_BASE_URL": gateway,  # waste: where local direct-upload forms post back
        "AUTH_PUBLIC_BASE_URL": gateway,  # auth: OAuth callbacks come back through the gateway
        "DATA_DIR": str(config.data_dir(service)),  # waste: its stored photos
        # waste: the heads `make train-head` publishes, outside the repository's tracked files
        "CLASSIFIER_HEADS_DIR": str(config.data_dir(service) / "heads"),
        "LOG_LEVEL": "info",
    }
    seed = seed_dir(config)
    if seed.is_dir():  # locations imports the public collection-point data once, on migrate
        table["COLLECTION_POINTS_SEED_DIR"] = str(seed.resolve())
    environment = dict(os.environ if base is None else base)
    stored = local_secrets(config.home)
    generated = {name: stored[name] for name in GENERATED_SECRETS if name not in environment}
    environment.update(table)
    environment.update(generated)
    return environment


def per_service_database_url(service: str, environ: Mapping[str, str] | None = None) -> str | None:
    """`<SVC>_DATABASE_URL` (e.g. WASTE_DATABASE_URL) points one service at a database as is."""
    env = os.environ if environ is None else environ
    return env.get(f"{service.upper()}_DATABASE_URL") or None
