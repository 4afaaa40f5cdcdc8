"""a knowledge source may have no address of its own

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 06:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("knowledge_sources", "url", existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    op.execute("UPDATE knowledge_sources SET url = '' WHERE url IS NULL")
    op.alter_column("knowledge_sources", "url", existing_type=sa.Text(), nullable=False)
