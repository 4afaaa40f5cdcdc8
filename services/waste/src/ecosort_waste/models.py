"""Tables of the waste service's own database."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ecosort_common.db import TimestampMixin, new_metadata
from ecosort_common.events import processed_events_table
from ecosort_common.outbox import outbox_table

ANALYSIS_STATUSES = ("queued", "processing", "completed", "failed")
ANALYSIS_STAGES = ("load", "classify", "guide", "save")
FINAL_STATUSES = frozenset({"completed", "failed"})
UNFINISHED_STATUSES = ("queued", "processing")


class Base(DeclarativeBase):
    metadata = new_metadata()


outbox = outbox_table(Base.metadata)
processed_events = processed_events_table(Base.metadata)


class Analysis(TimestampMixin, Base):
    """One photo and what the pipeline made of it. The API creates it ``queued``; the pipeline
    moves it through its stages and writes ``result`` or ``error``."""

    __tablename__ = "analyses"
    __table_args__ = (
        # Idempotency-Key is enforced here, atomically: a duplicate insert conflicts.
        UniqueConstraint("owner_id", "idempotency_key"),
        # An upload makes one analysis.
        UniqueConstraint("upload_id"),
        CheckConstraint(f"status IN {ANALYSIS_STATUSES}", name="status"),
        CheckConstraint(f"stage IS NULL OR stage IN {ANALYSIS_STAGES}", name="stage"),
        CheckConstraint("progress BETWEEN 0 AND 100", name="progress"),
        # The owner's list, newest first (cursor pagination over created_at, id).
        Index("ix_analyses_owner_created", "owner_id", "created_at", "id"),
        # The reaper looks for analyses that are not finished.
        Index(
            "ix_analyses_unfinished",
            "status",
            "updated_at",
            postgresql_where="status IN ('queued', 'processing')",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, default="queued")
    stage: Mapped[str | None] = mapped_column(Text, nullable=True)
    progress: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    image_key: Mapped[str] = mapped_column(Text, nullable=False)
    image_sha256: Mapped[str] = mapped_column(Text, nullable=False)
    idempotency_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    request_hash: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The direct upload the photo came from (None for a multipart upload, and before 0005).
    upload_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# The table itself, for the hot paths that write it with Core statements (the upload's insert,
# the pipeline's claim and save): they need none of the ORM's bookkeeping.
analyses: Table = Analysis.__table__  # type: ignore[assignment]


class Correction(Base):
    """A person's correction of an analysis's category: training data for the next head. One
    per analysis: the owner's latest replaces the earlier one (``created_at`` is when the one
    in force was made)."""

    __tablename__ = "corrections"
    # Only the owner can correct an analysis, so one per analysis is one per person too.
    __table_args__ = (UniqueConstraint("analysis_id"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    analysis_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("analyses.id", ondelete="CASCADE"), nullable=False
    )
    owner_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    category: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class DeletedUser(Base):
    """Tombstone of a deleted account (`user.deleted`): a token issued before the deletion
    may still be valid for minutes, and must not create analyses no later event would remove.
    Holds nothing but the id and the time."""

    __tablename__ = "deleted_users"

    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    deleted_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
