"""corrections that arrived before their analysis

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pending_corrections",
        sa.Column("analysis_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("category", sa.String(length=40), nullable=False),
        sa.Column("corrected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("analysis_id", name=op.f("pk_pending_corrections")),
    )
    op.create_index(
        op.f("ix_pending_corrections_user_id"), "pending_corrections", ["user_id"], unique=False
    )
    op.create_index(
        op.f("ix_pending_corrections_received_at"),
        "pending_corrections",
        ["received_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_pending_corrections_received_at"), table_name="pending_corrections")
    op.drop_index(op.f("ix_pending_corrections_user_id"), table_name="pending_corrections")
    op.drop_table("pending_corrections")
