"""Whether a service's database is behind its Alembic migrations.

Each `python -m ecosort_<svc> migrate` costs a Python process importing SQLAlchemy, Alembic
and the service's models (about 2 CPU-seconds); five of them are most of a cold start on two
cores. When a database is already at the head revision that run would change nothing, so the
launcher asks Alembic itself (script heads vs. the database's alembic_version) and runs the
service's migrate command only when they differ. ECOSORT_STACK_MIGRATE=always runs it anyway.
"""

from __future__ import annotations

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
