"""Whether a service's database is behind its Alembic migrations.

Each `python -m ecosort_<svc> migrate` costs a Python process importing SQLAlchemy, Alembic
and the service's models (about 2 CPU-seconds); five of them are most of a cold start on two
cores. When a database is already at the head revision that run would change nothing, so the
launcher asks Alembic itself (script heads vs. the database's alembic_version) and runs the
service's migrate command only when they differ. ECOSORT_STACK_MIGRATE=always runs it anyway.

A `migrate` can do more than the schema: locations' imports the files of its seed folder
(COLLECTION_POINTS_SEED_DIR) it has not imported yet. `seed_fingerprint` tells when that folder
changed since the last `migrate` the launcher ran, so a database at its head still gets them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool


def script_heads(service: str) -> set[str]:
    config = Config()
    config.set_main_option("script_location", f"ecosort_{service}:migrations")
    return set(ScriptDirectory.from_config(config).get_heads())


def database_heads(database_url: str) -> set[str]:
    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return set(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()


def is_up_to_date(service: str, database_url: str) -> bool:
    """True only when the database provably sits at every head; any doubt means migrate."""
    try:
        heads = script_heads(service)
        return bool(heads) and database_heads(database_url) == heads
    except Exception:  # a missing script folder, a bad URL, ... : let `migrate` say what
        return False


SEED_SETTINGS = ("COLLECTION_POINTS_SEED_DIR",)


def seed_fingerprint(env: Mapping[str, str]) -> str | None:
    """The seed files `migrate` would import (names, sizes, times) and into which database, as
    a digest; None when the service's `migrate` imports nothing."""
    folders = [env[name] for name in SEED_SETTINGS if env.get(name)]
    if not folders:
        return None
    digest = hashlib.sha256(env.get("DATABASE_URL", "").encode())
    for folder in folders:
        if not Path(folder).is_dir():  # never matches a stamp: `migrate` runs and says why
            digest.update(f"\0{folder}\0not a folder".encode())
            continue
        for path in sorted(Path(folder).iterdir()):
            info = path.stat()
            digest.update(f"\0{path.name}\0{info.st_size}\0{info.st_mtime_ns}".encode())
    return digest.hexdigest()
