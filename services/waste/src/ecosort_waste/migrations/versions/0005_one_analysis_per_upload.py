"""one analysis per direct upload

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 20:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable and not backfilled: earlier analyses never recorded their upload, and a
    # multipart upload has none. NULLs never conflict, so only new rows are held to one each.
    op.add_column("analyses", sa.Column("upload_id", sa.UUID(), nullable=True))
    op.create_unique_constraint(op.f("uq_analyses_upload_id"), "analyses", ["upload_id"])


def downgrade() -> None:
    op.drop_constraint(op.f("uq_analyses_upload_id"), "analyses", type_="unique")
    op.drop_column("analyses", "upload_id")
