"""indexes for deleting old events

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 21:40:00.000000
"""

from collections.abc import Sequence

from ecosort_common.migrations import add_event_retention_indexes, drop_event_retention_indexes

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_event_retention_indexes()


def downgrade() -> None:
    drop_event_retention_indexes()
