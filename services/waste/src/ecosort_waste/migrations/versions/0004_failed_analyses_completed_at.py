"""failed analyses record when they finished

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 19:05:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # `completed_at` is when an analysis reached its final state, failed ones included; before,
    # only completed ones had it. A failed one was last written when it failed.
    op.execute(
        "UPDATE analyses SET completed_at = updated_at "
        "WHERE status = 'failed' AND completed_at IS NULL"
    )


def downgrade() -> None:
    # The older code never reads `completed_at` of a failed analysis: nothing to undo.
    pass
