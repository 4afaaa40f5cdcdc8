"""tombstones of deleted accounts

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 20:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Accounts deleted before this revision have no tombstone: their tokens expired long ago.
    op.create_table(
        "deleted_users",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column(
            "deleted_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_deleted_users")),
    )


def downgrade() -> None:
    op.drop_table("deleted_users")
