"""one correction per analysis

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 18:10:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Keep the correction training already used (the latest; on a tie, the lowest id), so the
    # next head learns what the last one did.
    op.execute(
        """
        DELETE FROM corrections WHERE id IN (
            SELECT id FROM (
                SELECT id, row_number() OVER (
                    PARTITION BY analysis_id ORDER BY created_at DESC, id
                ) AS rank
                FROM corrections
            ) AS ranked
            WHERE rank > 1
        )
        """
    )
    # The constraint's index serves lookups by analysis: the plain one would be a duplicate.
    op.drop_index("ix_corrections_analysis", table_name="corrections")
    op.create_unique_constraint(op.f("uq_corrections_analysis_id"), "corrections", ["analysis_id"])


def downgrade() -> None:
    # The corrections the upgrade replaced are gone for good; only the schema comes back.
    op.drop_constraint(op.f("uq_corrections_analysis_id"), "corrections", type_="unique")
    op.create_index("ix_corrections_analysis", "corrections", ["analysis_id"], unique=False)
