"""Async SQLAlchemy 2 engine and sessions over psycopg 3."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime

from fastapi import Request
from sqlalchemy import DateTime, MetaData, func, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Mapped, mapped_column

# Stable constraint names so Alembic autogenerate produces the same migrations everywhere.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    """Each service's own declarative Base uses one, so its metadata holds only its tables."""
    return MetaData(naming_convention=NAMING_CONVENTION)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


def create_engine(url: str, *, pool_size: int = 10, connect_timeout: float = 3.0) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"connect_timeout": max(1, int(connect_timeout))},
        # A statement's error names its parameters otherwise, and such errors are logged (an
        # event handler's failure, an unexpected 500): nicknames, e-mail addresses.
        hide_parameters=True,
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: one session per request, rolled back if the handler raises."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        yield session


# One advisory lock per person's account, in each service's own database: shared by every
# transaction creating the person's data there, exclusive for the account's deletion. A creator
# that got it first has committed before the deletion's DELETEs run, so they see its rows (a
# DELETE misses those of transactions still open); one that waited reads the tombstone, its next
# statement starting after the deletion committed. Deletions exclude one another.
ACCOUNT_LOCK_KEY = "hashtextextended('account:' || :account, 0)"
_HOLD_ACCOUNT = text(f"SELECT pg_advisory_xact_lock_shared({ACCOUNT_LOCK_KEY})")
_LOCK_ACCOUNT = text(f"SELECT pg_advisory_xact_lock({ACCOUNT_LOCK_KEY})")


async def hold_account_lock(session: AsyncSession, account_id: uuid.UUID) -> None:
    """The account's lock, shared, until the transaction ends; check the tombstone after it, in
    a statement of its own."""
    await session.execute(_HOLD_ACCOUNT, {"account": str(account_id)})


async def take_account_lock(session: AsyncSession, account_id: uuid.UUID) -> None:
    """The account's lock, exclusive, until the transaction ends: for its deletion."""
    await session.execute(_LOCK_ACCOUNT, {"account": str(account_id)})
