"""the history's index covers corrected_at too

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from ecosort_common.migrations import LOCK_TIMEOUT, STATEMENT_TIMEOUT

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COVERING = "ix_analysis_history_user_completed_covering"
BUILDING = "ix_analysis_history_user_completed_covering_next"


def upgrade() -> None:
    # The history and the export list corrected_at: without it in the index they fetch every
    # row from the table, and the export of 100k analyses went back to a sort spilled to disk.
    # Built beside the old one, which is then dropped, concurrently, as 0005 did; renamed last,
    # so the models keep one name.
    with op.get_context().autocommit_block():
        # The builds wait out every older transaction (0005): the hook Job's deadline bounds them.
        op.execute("SET lock_timeout = 0")
        op.execute("SET statement_timeout = 0")
        # An attempt that stopped part-way left an invalid build (a retry starts it over) or a
        # valid one, perhaps with the old index dropped already: kept, the history is never
        # without a covering index, nor built twice.
        if not _valid(BUILDING):
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {BUILDING}")
            op.create_index(
                BUILDING,
                "analysis_history",
                ["user_id", "completed_at", "id"],
                postgresql_include=["category", "confidence", "corrected_at"],
                postgresql_concurrently=True,
            )
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {COVERING}")
        op.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        op.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
        op.execute(f"ALTER INDEX {BUILDING} RENAME TO {COVERING}")


def _valid(index: str) -> bool:
    found = op.get_bind().execute(
        sa.text(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = :index"
        ),
        {"index": index},
    )
    return bool(found.scalar())


def downgrade() -> None:
    op.drop_index(COVERING, table_name="analysis_history")
    op.create_index(
        COVERING,
        "analysis_history",
        ["user_id", "completed_at", "id"],
        postgresql_include=["category", "confidence"],
    )
