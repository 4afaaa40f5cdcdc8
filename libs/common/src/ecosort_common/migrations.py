"""Alembic, the same way in every service: `python -m ecosort_<svc> migrate`, and an env.py of
two lines (`run_migrations(Base.metadata)`)."""

from __future__ import annotations

import zlib

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, create_engine, pool, text


def alembic_config(package: str, database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", f"{package}:migrations")
    config.attributes["database_url"] = database_url
    config.attributes["lock_id"] = zlib.crc32(package.encode())
    return config


def upgrade(package: str, database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(package, database_url), revision)


def run_migrations(metadata: MetaData) -> None:
    """Body of every service's migrations/env.py. Migrations run synchronously (psycopg 3 serves
    both modes) under an advisory lock, so replicas starting together migrate once."""
    config = context.config
    url = config.attributes["database_url"]
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        connection.execute(
            text("SELECT pg_advisory_lock(:id)"), {"id": config.attributes["lock_id"]}
        )
        connection.commit()
        try:
            context.configure(connection=connection, target_metadata=metadata, compare_type=True)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            connection.execute(
                text("SELECT pg_advisory_unlock(:id)"), {"id": config.attributes["lock_id"]}
            )
            connection.commit()
    engine.dispose()
