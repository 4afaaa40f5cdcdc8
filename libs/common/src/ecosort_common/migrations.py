"""Alembic, the same way in every service: `python -m ecosort_<svc> migrate`, and an env.py of
two lines (`run_migrations(Base.metadata)`)."""

from __future__ import annotations

import time
import zlib

import sqlalchemy as sa
from alembic import command, context, op
from alembic.config import Config
from sqlalchemy import Connection, MetaData, create_engine, pool, text
from sqlalchemy.dialects import postgresql

# A migration waiting for a lock (ALTER TABLE wants ACCESS EXCLUSIVE behind any open transaction
# on the table) queues every later query on that table behind it, reads included: give up after
# a few seconds instead, and let the hook Job's retry try again. The statement limit bounds how
# long a lock is then held, index builds included, and ends the server's side of the work before
# the Job's activeDeadlineSeconds (600 s) kills the client.
LOCK_TIMEOUT = "5s"
STATEMENT_TIMEOUT = "5min"
LOCK_POLL_SECONDS = 0.2


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
    both modes) under an advisory lock, so replicas starting together migrate once, and under
    LOCK_TIMEOUT and STATEMENT_TIMEOUT."""
    config = context.config
    url = config.attributes["database_url"]
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        _take_lock(connection, config.attributes["lock_id"])
        # Set after the advisory lock: a second migrator waits for the first one to finish.
        connection.execute(
            text(
                "SELECT set_config('lock_timeout', :lock, false), "
                "set_config('statement_timeout', :statement, false)"
            ),
            {"lock": LOCK_TIMEOUT, "statement": STATEMENT_TIMEOUT},
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


def _take_lock(connection: Connection, lock_id: int) -> None:
    """Wait for the migrations' advisory lock by asking again and again: a statement waiting in
    pg_advisory_lock holds a snapshot, which the holder's CREATE INDEX CONCURRENTLY would wait
    for in turn (a deadlock, one migrator failing)."""
    while True:
        taken = connection.execute(text("SELECT pg_try_advisory_lock(:id)"), {"id": lock_id})
        connection.commit()
        if taken.scalar_one():
            return
        time.sleep(LOCK_POLL_SECONDS)


def create_event_tables() -> None:
    """The `outbox` and `processed_events` tables (ecosort_common.outbox / events) as every
    service's first migration creates them. Like any migration this is history: a change to
    those tables needs a new migration in each service, not an edit here."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "occurred_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["occurred_at"],
        postgresql_where="published_at IS NULL",
    )
    op.create_table(
        "processed_events",
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column(
            "processed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("event_id", name="pk_processed_events"),
    )


def add_event_retention_indexes() -> None:
    """The indexes by which old published events and old processed-event records are deleted
    (ecosort_common.outbox / events). Built concurrently: the outbox takes an insert with every
    change a service announces, and a plain CREATE INDEX would hold those off for the build."""
    with op.get_context().autocommit_block():
        # Such a build blocks no reads or writes, but first waits for every transaction in the
        # database older than it (a backup's, a report's): LOCK_TIMEOUT would fail it for that.
        # The hook Job's deadline bounds it instead.
        op.execute("SET lock_timeout = 0")
        op.execute("SET statement_timeout = 0")
        # A concurrent build that failed leaves an invalid index behind: a retry starts over.
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_outbox_published_at")
        op.create_index(
            "ix_outbox_published_at",
            "outbox",
            ["published_at"],
            postgresql_where="published_at IS NOT NULL",
            postgresql_concurrently=True,
        )
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_processed_events_processed_at")
        op.create_index(
            "ix_processed_events_processed_at",
            "processed_events",
            ["processed_at"],
            postgresql_concurrently=True,
        )
        op.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        op.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")


def drop_event_retention_indexes() -> None:
    op.drop_index("ix_processed_events_processed_at", table_name="processed_events")
    op.drop_index("ix_outbox_published_at", table_name="outbox")


def drop_event_tables() -> None:
    op.drop_table("processed_events")
    op.drop_index("ix_outbox_unpublished", table_name="outbox")
    op.drop_table("outbox")
