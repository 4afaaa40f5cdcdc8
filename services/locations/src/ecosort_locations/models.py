"""Tables of the locations service's own database: collection points, the record of imported
files, and the event plumbing tables."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, DateTime, Float, Index, String, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ecosort_common.db import TimestampMixin, new_metadata
from ecosort_common.events import processed_events_table
from ecosort_common.outbox import outbox_table


class Base(DeclarativeBase):
    metadata = new_metadata()


class CollectionPoint(TimestampMixin, Base):
    """A bin or drop-off point. (source, source_id) is the row's identity in its public dataset,
    so re-importing a file updates rows instead of duplicating them."""

    __tablename__ = "collection_points"
    __table_args__ = (
        UniqueConstraint("source", "source_id"),
        # Nearest-point search filters on a lat/lng bounding box before computing distances.
        Index("ix_collection_points_lat_lng", "lat", "lng"),
        Index("ix_collection_points_type_lat", "type", "lat"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    type: Mapped[str] = mapped_column(String(32), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    address: Mapped[str] = mapped_column(String(300), nullable=False)
    detail: Mapped[str | None] = mapped_column(String(300))
    region: Mapped[str | None] = mapped_column(String(60))
    lat: Mapped[float] = mapped_column(Float, nullable=False)
    lng: Mapped[float] = mapped_column(Float, nullable=False)
    geocoded: Mapped[bool] = mapped_column(nullable=False, default=False)
    source: Mapped[str] = mapped_column(String(40), nullable=False)
    source_id: Mapped[str] = mapped_column(String(200), nullable=False)
    source_date: Mapped[date | None] = mapped_column(Date)


class DatasetImport(Base):
    """One import of a file: what came in, what was skipped and why."""

    __tablename__ = "dataset_imports"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    file_name: Mapped[str] = mapped_column(String(300), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    point_type: Mapped[str] = mapped_column(String(32), nullable=False)
    counts: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    imported_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


outbox = outbox_table(Base.metadata)
processed_events = processed_events_table(Base.metadata)
