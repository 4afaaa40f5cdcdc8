"""Tables of the recycling service's own database: the rules knowledge base as loaded from the
versioned data files (see loader.py), plus the shared outbox and processed-events tables."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Boolean, Date, DateTime, ForeignKey, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ecosort_common.db import new_metadata
from ecosort_common.events import processed_events_table
from ecosort_common.outbox import outbox_table


class Base(DeclarativeBase):
    metadata = new_metadata()


outbox = outbox_table(Base.metadata)
processed_events = processed_events_table(Base.metadata)


# What `url` holds for a source with no address of its own (the API's null): a URI that names
# no document. Not NULL: releases that read every url as a non-empty string would then serve
# no knowledge base at all, as one of their replicas does when it starts on such data (in a
# rolling update, or after `helm rollback`, which leaves the loaded data as it is).
NO_ADDRESS = "about:blank"


class KnowledgeSource(Base):
    __tablename__ = "knowledge_sources"

    key: Mapped[str] = mapped_column(String(16), primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(Text)
    date: Mapped[date] = mapped_column(Date)
    date_kind: Mapped[str] = mapped_column(String(32))
    tier: Mapped[str] = mapped_column(String(1))


class Category(Base):
    __tablename__ = "categories"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name_ko: Mapped[str] = mapped_column(Text)
    name_en: Mapped[str] = mapped_column(Text)
    varies_by_region: Mapped[bool] = mapped_column(Boolean)
    # The whole rule document (disposal, steps, mistakes, marks, each rule with sources and
    # date): read as one piece, never queried by its parts.
    document: Mapped[dict[str, Any]] = mapped_column(JSONB)


class Item(Base):
    __tablename__ = "items"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name_ko: Mapped[str] = mapped_column(Text)
    name_en: Mapped[str] = mapped_column(Text)
    synonyms: Mapped[list[str]] = mapped_column(JSONB)
    parts: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    sources: Mapped[list[str]] = mapped_column(JSONB)
    primary_category: Mapped[str] = mapped_column(
        String(32), ForeignKey("categories.code"), index=True
    )


class RegionalRule(Base):
    __tablename__ = "regional_rules"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    region_code: Mapped[str] = mapped_column(String(5), index=True)
    region_name: Mapped[str] = mapped_column(Text)
    aliases: Mapped[list[str]] = mapped_column(JSONB)
    category_code: Mapped[str] = mapped_column(String(32), ForeignKey("categories.code"))
    text: Mapped[str] = mapped_column(Text)
    sources: Mapped[list[str]] = mapped_column(JSONB)
    as_of: Mapped[date] = mapped_column(Date)


class KnowledgeVersion(Base):
    """One row: which data version is loaded, its content digest, and when it was loaded."""

    __tablename__ = "knowledge_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    data_version: Mapped[str] = mapped_column(String(64))
    checksum: Mapped[str] = mapped_column(String(64))
    loaded_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
