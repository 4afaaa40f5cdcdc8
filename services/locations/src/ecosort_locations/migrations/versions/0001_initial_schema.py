"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27 00:22:32.794456
"""

from collections.abc import Sequence

from ecosort_common.migrations import create_event_tables, drop_event_tables

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_event_tables()


def downgrade() -> None:
    drop_event_tables()
