"""Collection points (nearest search over a lat/lng index) and the record of imported files.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 00:31:46.691917
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "collection_points",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=300), nullable=False),
        sa.Column("detail", sa.String(length=300), nullable=True),
        sa.Column("region", sa.String(length=60), nullable=True),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lng", sa.Float(), nullable=False),
        sa.Column("geocoded", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("source_id", sa.String(length=200), nullable=False),
        sa.Column("source_date", sa.Date(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collection_points")),
        sa.UniqueConstraint(
            "source", "source_id", name=op.f("uq_collection_points_source_source_id")
        ),
    )
    op.create_index(
        "ix_collection_points_lat_lng", "collection_points", ["lat", "lng"], unique=False
    )
    op.create_index(
        "ix_collection_points_type_lat", "collection_points", ["type", "lat"], unique=False
    )
    op.create_table(
        "dataset_imports",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("file_name", sa.String(length=300), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("point_type", sa.String(length=32), nullable=False),
        sa.Column("counts", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "imported_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_imports")),
    )
    op.create_index(op.f("ix_dataset_imports_sha256"), "dataset_imports", ["sha256"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_dataset_imports_sha256"), table_name="dataset_imports")
    op.drop_table("dataset_imports")
    op.drop_index("ix_collection_points_type_lat", table_name="collection_points")
    op.drop_index("ix_collection_points_lat_lng", table_name="collection_points")
    op.drop_table("collection_points")
