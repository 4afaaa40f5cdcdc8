"""the history's index covers category and confidence

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 09:10:00.000000
"""

from collections.abc import Sequence

from alembic import op

from ecosort_common.migrations import LOCK_TIMEOUT, STATEMENT_TIMEOUT

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COVERING = "ix_analysis_history_user_completed_covering"
PLAIN = "ix_analysis_history_user_completed"


def upgrade() -> None:
    # Built, then the old one dropped, concurrently: analysis.completed inserts into the table
    # all the time, and a plain CREATE/DROP INDEX would hold them off meanwhile.
    with op.get_context().autocommit_block():
        # Such a build first waits for every older transaction in the database: LOCK_TIMEOUT
        # would fail it for a long report; the hook Job's deadline bounds it instead.
        op.execute("SET lock_timeout = 0")
        op.execute("SET statement_timeout = 0")
        # A concurrent build that failed leaves an invalid index behind: a retry starts over.
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {COVERING}")
        op.create_index(
            COVERING,
            "analysis_history",
            ["user_id", "completed_at", "id"],
            postgresql_include=["category", "confidence"],
            postgresql_concurrently=True,
        )
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {PLAIN}")
        op.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        op.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")


def downgrade() -> None:
    op.create_index(PLAIN, "analysis_history", ["user_id", "completed_at", "id"])
    op.drop_index(COVERING, table_name="analysis_history")
