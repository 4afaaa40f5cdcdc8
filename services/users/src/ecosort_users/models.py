"""Tables of the users service's own database: profiles, the analysis history built from
`analysis.completed` events, tombstones of deleted accounts, and the event plumbing tables."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, Float, Index, String, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ecosort_common.db import TimestampMixin, new_metadata
from ecosort_common.events import processed_events_table
from ecosort_common.outbox import outbox_table


class Base(DeclarativeBase):
    metadata = new_metadata()


class Profile(TimestampMixin, Base):
    """A person's profile; its id is auth's user id (the access token's `sub`)."""

    __tablename__ = "profiles"

    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    nickname: Mapped[str | None] = mapped_column(String(30))
    provider: Mapped[str | None] = mapped_column(String(20))
    email: Mapped[str | None] = mapped_column(String(320))
    region_code: Mapped[str | None] = mapped_column(String(5))
    region_name: Mapped[str | None] = mapped_column(String(60))
    locale: Mapped[str] = mapped_column(String(10), nullable=False)


class AnalysisRecord(Base):
    """One completed analysis in a person's history. The id is waste's analysis id, so the same
    analysis announced twice (even under two event ids) is recorded once. `category` is the
    owner's correction once there is one (`analysis.corrected`), else the model's answer."""

    __tablename__ = "analysis_history"
    __table_args__ = (
        # Covering (every field of a history item): the history, the export and the statistics
        # read the index alone, in its order, instead of fetching and sorting a person's rows
        # (the export's sort spilled to disk at 100k rows).
        Index(
            "ix_analysis_history_user_completed_covering",
            "user_id",
            "completed_at",
            "id",
            postgresql_include=["category", "confidence", "corrected_at"],
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    category: Mapped[str] = mapped_column(String(40), nullable=False)
    confidence: Mapped[float | None] = mapped_column(Float)
    completed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    recorded_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    # When the owner made the correction `category` reflects (None: the model's answer): an
    # older correction arriving late must not undo a newer one.
    corrected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PendingCorrection(Base):
    """An owner's correction (`analysis.corrected`) that arrived before its analysis
    (`analysis.completed`, on another stream, may wait for a redelivery): kept, the newest per
    analysis, until `crud.record_analysis` applies it. A correction of an analysis that never
    completes is pruned after `crud.PENDING_CORRECTION_RETENTION`."""

    __tablename__ = "pending_corrections"

    analysis_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    # Indexed: the account's deletion deletes them.
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False, index=True)
    category: Mapped[str] = mapped_column(String(40), nullable=False)
    corrected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # When it arrived (not the owner's clock): what the pruning goes by.
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False, index=True
    )


class DeletedUser(Base):
    """Tombstone of a deleted account: late or redelivered events for it must not bring a
    profile back. Holds nothing but the id and the time."""

    __tablename__ = "deleted_users"

    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    deleted_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


outbox = outbox_table(Base.metadata)
processed_events = processed_events_table(Base.metadata)
