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


# libpq's TCP settings for every connection. A server that vanished without a word (a failover
# that black-holes the old address, a NAT or load balancer that dropped an idle connection's
# state) acknowledges nothing, and with the kernel's defaults (keepalive after two hours, data
# retransmitted for ~15 minutes) a pooled connection to it, its pre-ping included, waits for
# ever: a request until its deadline, a background loop for its whole round. With these the
# kernel closes such a connection within TCP_USER_TIMEOUT_MS of silence, idle or in use, and the
# pre-ping replaces it. The keepalives also keep idle connections known to middleboxes that
# forget them after a few minutes. A server that acknowledges but never answers (a hung proxy)
# is beyond TCP's reach: the request deadline and ecosort_common.aio's rounds bound that.
# A long query is not cut (the server acknowledges its probes), but a live server that stops
# reading for that long while we still have data to send is (Linux counts zero-window probes
# against it): no pipeline (psycopg's executemany) or COPY of megabytes behind a statement that
# may wait on a lock.
TCP_USER_TIMEOUT_MS = 20_000
TCP_KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
}


def create_engine(url: str, *, pool_size: int = 10, connect_timeout: float = 3.0) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"connect_timeout": max(1, int(connect_timeout)), **TCP_KEEPALIVE},
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
