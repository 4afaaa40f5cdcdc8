"""A migration blocked on a table lock gives up within LOCK_TIMEOUT instead of queueing every
query on that table behind it (the hook Job retries); statements run under STATEMENT_TIMEOUT."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from ecosort_common import migrations
from ecosort_common.testing import temporary_database

ENV = """from sqlalchemy import MetaData

from ecosort_common.migrations import run_migrations

run_migrations(MetaData())
"""

REVISIONS = {
    # Records the session's limits as the migrations see them.
    "0001": """
        CREATE TABLE seen AS SELECT current_setting('lock_timeout') AS lock_timeout,
                                    current_setting('statement_timeout') AS statement_timeout
    """,
    # Wants ACCESS EXCLUSIVE on `seen`, as 0005 of waste does on `analyses`.
    "0002": "ALTER TABLE seen ADD CONSTRAINT uq_seen_lock_timeout UNIQUE (lock_timeout)",
}


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A throwaway package with migrations/ as the services lay theirs out."""
    name = f"ecosort_locktest_{uuid.uuid4().hex[:8]}"
    versions = tmp_path / name / "migrations" / "versions"
    versions.mkdir(parents=True)
    (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / name / "migrations" / "env.py").write_text(ENV)
    down = None
    for revision, sql in REVISIONS.items():
        (versions / f"{revision}_step.py").write_text(
            "from alembic import op\n\n"
            f"revision = {revision!r}\ndown_revision = {down!r}\n"
            "branch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade() -> None:\n    op.execute({sql!r})\n"
        )
        down = revision
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def seconds(setting: str) -> float:
    value, unit = float(setting.rstrip("smin")), setting.lstrip("0123456789.")
    return value * {"ms": 0.001, "s": 1, "min": 60}[unit]


def test_migrations_run_under_a_lock_and_a_statement_timeout(package: str) -> None:
    with temporary_database("migration_timeouts") as url:
        migrations.upgrade(package, url, "0001")
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            lock, statement = conn.execute(sa.text("SELECT * FROM seen")).one()
        engine.dispose()
    assert (lock, statement) == (migrations.LOCK_TIMEOUT, migrations.STATEMENT_TIMEOUT)
    assert 0 < seconds(lock) <= 10
    # Long enough for an index build, short of the hook Job's activeDeadlineSeconds (600).
    assert 60 <= seconds(statement) < 600


def test_a_migration_blocked_by_an_open_transaction_fails_fast(package: str) -> None:
    with temporary_database("migration_lock_timeout") as url:
        migrations.upgrade(package, url, "0001")
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        outcome: dict[str, object] = {}

        def migrate() -> None:
            started = time.monotonic()
            try:
                migrations.upgrade(package, url)
            except Exception as exc:
                outcome["error"] = exc
            outcome["seconds"] = time.monotonic() - started

        try:
            with engine.connect() as holder:
                # A long read transaction: its ACCESS SHARE lock blocks ALTER TABLE.
                holder.execute(sa.text("SELECT count(*) FROM seen"))
                thread = threading.Thread(target=migrate, daemon=True)
                thread.start()
                thread.join(timeout=seconds(migrations.LOCK_TIMEOUT) + 15)
                blocked = thread.is_alive()
                holder.rollback()  # let a hanging migration go, so the test ends either way
            thread.join(timeout=30)
            assert not blocked, "the migration waited for the lock instead of giving up"
            error = outcome["error"]
            assert isinstance(error, sa.exc.OperationalError)
            assert isinstance(error.orig, psycopg.errors.LockNotAvailable)
            # Nothing of it applied, and the advisory lock is free: the retry goes through.
            migrations.upgrade(package, url)
            with engine.connect() as conn:
                version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).one()
            assert version == ("0002",)
        finally:
            engine.dispose()
