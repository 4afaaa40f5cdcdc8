"""Transactional outbox: an event is written in the same transaction as the change it announces,
and a relay publishes it to Redis Streams afterwards (at least once; consumers dedupe by id).

A stream keeps what some consumer group still has to read: the relay trims it, now and then,
below the oldest entry any group has not read or not acknowledged. A fixed length would drop
the oldest events unread while a consumer is down long enough, and their outbox rows are
already marked published, so nothing would send them again. A stream no group reads yet (its
consumers have not started) and a group that stopped reading for good are bounded by
STREAM_MAXLEN, the guard of Redis's memory, far above what a day's outage accumulates. A group
created after others (a second consumer back later than the first after Redis restarted empty)
starts at `0`: the trim keeps the last TRIM_KEEPS of entries, whatever the groups have read.
Published rows leave the outbox table after PUBLISHED_RETENTION.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from redis.asyncio import Redis
from sqlalchemy import (
    Column,
    DateTime,
    Delete,
    Index,
    MetaData,
    Select,
    String,
    Table,
    any_,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ecosort_common import aio

STREAM_PREFIX = "events:"
STREAM_MAXLEN = 1_000_000
# The trim keeps the last day's entries whatever the groups say: a group not created yet (Redis
# restarted empty and one consumer is back before another, or a service starts consuming a
# stream others already read) is created at `0` and needs them.
TRIM_KEEPS = timedelta(days=1)
HOUSEKEEPING_EVERY_SECONDS = 60.0
# Published rows stay a while, to look into what was sent; then they go, a batch per round.
PUBLISHED_RETENTION = timedelta(days=7)
PRUNE_BATCH = 1_000
PRUNE_SECONDS = 5.0  # per round: a backlog goes over several rounds
log = structlog.get_logger("ecosort.outbox")


def stream_name(event_type: str) -> str:
    return f"{STREAM_PREFIX}{event_type}"


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", UUID(as_uuid=True), primary_key=True),
        Column("event_type", String(100), nullable=False),
        Column("payload", JSONB, nullable=False),
        Column("occurred_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True), nullable=True),
        Index("ix_outbox_unpublished", "occurred_at", postgresql_where="published_at IS NULL"),
        Index(
            "ix_outbox_published_at", "published_at", postgresql_where="published_at IS NOT NULL"
        ),
    )


async def add_event(
    session: AsyncSession, table: Table, event_type: str, payload: dict[str, Any]
) -> uuid.UUID:
    """Stage an event in the caller's transaction; it is published only if that commits."""
    event_id = uuid.uuid4()
    await session.execute(
        insert(table).values(
            id=event_id,
            event_type=event_type,
            payload=payload,
            occurred_at=datetime.now(UTC),
        )
    )
    return event_id


class OutboxRelay:
    def __init__(
        self,
        table: Table,
        sessionmaker: async_sessionmaker[AsyncSession],
        redis: Redis,
        *,
        source: str,
        poll_seconds: float = 0.5,
        batch_size: int = 100,
    ) -> None:
        self.table = table
        self.sessionmaker = sessionmaker
        self.redis = redis
        self.source = source
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self.streams: set[str] = set()  # those this relay published to
        self._housekept_at = -HOUSEKEEPING_EVERY_SECONDS  # the first round at start

    async def publish_pending(self) -> int:
        """Publish one batch. Rows are locked with SKIP LOCKED so several relays can run."""
        t = self.table
        async with self.sessionmaker() as session, session.begin():
            rows = (
                await session.execute(
                    select(t.c.id, t.c.event_type, t.c.payload, t.c.occurred_at)
                    .where(t.c.published_at.is_(None))
                    .order_by(t.c.occurred_at)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                self.streams.add(stream_name(row.event_type))
                await self.redis.xadd(
                    stream_name(row.event_type),
                    {
                        "id": str(row.id),
                        "type": row.event_type,
                        "source": self.source,
                        "occurred_at": row.occurred_at.isoformat(),
                        "payload": json.dumps(row.payload),
                    },
                    maxlen=STREAM_MAXLEN,
                    approximate=True,
                )
            if rows:
                await session.execute(
                    update(t)
                    .where(t.c.id.in_([row.id for row in rows]))
                    .values(published_at=func.now())
                )
        return len(rows)

    async def trim(self) -> None:
        """Drop from each stream this relay published to what every group has read and
        acknowledged, and is older than TRIM_KEEPS."""
        for stream in self.streams:
            floor = await unread_floor(self.redis, stream)
            if floor is not None:
                kept = int((time.time() - TRIM_KEEPS.total_seconds()) * 1000)
                floor = min(floor, f"{kept}-0", key=_entry_order)
                await self.redis.xtrim(stream, minid=floor, approximate=True)

    async def prune(self) -> int:
        """Delete the rows published longer than PUBLISHED_RETENTION ago, a batch per
        transaction, for at most PRUNE_SECONDS; how many."""
        t = self.table
        old = (
            select(t.c.id)
            .where(t.c.published_at < datetime.now(UTC) - PUBLISHED_RETENTION)
            .limit(PRUNE_BATCH)
        )
        return await delete_in_batches(self.sessionmaker, delete(t).where(t.c.id.in_(old)))

    async def _housekeeping(self) -> None:
        # Each on its own: the next round retries what failed, and publishing never waits.
        for step in (self.trim, self.prune):
            try:
                await step()
            except Exception as exc:
                log.warning(
                    "outbox_housekeeping_failed", step=step.__name__, error=type(exc).__name__
                )

    async def run(self) -> None:
        backoff = self.poll_seconds
        while True:
            try:
                async with asyncio.timeout(aio.BACKGROUND_ROUND_SECONDS):
                    if time.monotonic() - self._housekept_at > HOUSEKEEPING_EVERY_SECONDS:
                        self._housekept_at = time.monotonic()
                        await self._housekeeping()
                    published = await self.publish_pending()
                backoff = self.poll_seconds
                if published:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a dependency is down: keep trying, never crash the service
                log.warning("outbox_relay_failed", error=type(exc).__name__)
                backoff = min(backoff * 2, 30.0)
            await asyncio.sleep(backoff)


async def unread_floor(redis: Redis, stream: str) -> str | None:
    """The oldest entry id of `stream` that some consumer group has not read or not
    acknowledged (entries below it are done with); None while no group reads the stream."""
    floors: list[str] = []
    for group in await redis.xinfo_groups(stream):
        # None when the last pending entry was acknowledged since XINFO answered.
        oldest_pending = (
            (await redis.xpending(stream, group["name"]))["min"] if group["pending"] else None
        )
        # Else everything up to the last delivered entry is done; that one stays, harmlessly.
        floors.append(oldest_pending or group["last-delivered-id"])
    return min(floors, key=_entry_order, default=None)


def _entry_order(entry_id: str) -> tuple[int, int]:
    milliseconds, sequence = entry_id.split("-")
    return int(milliseconds), int(sequence)


def delete_by_key(target: Any, key: Any, keys: Select[Any]) -> Delete:
    """DELETE FROM `target` of the rows whose `key` (its primary key) `keys` selects, looked up
    by that key: `= ANY(ARRAY(...))`, not `IN (...)`, for which the planner may join the batch
    to a scan of the whole table when narrow rows make that look cheap (300k inbox records: 41
    ms a batch, 4 ms by key)."""
    batch = func.array(keys.scalar_subquery(), type_=ARRAY(key.type))
    return delete(target).where(key == any_(batch))


async def delete_in_batches(sessionmaker: async_sessionmaker[AsyncSession], batch: Delete) -> int:
    """Run `batch` (a DELETE of at most PRUNE_BATCH rows) until it deletes fewer, or for
    PRUNE_SECONDS; how many rows went. Short transactions: no long lock on a busy table."""
    deleted, started = 0, time.monotonic()
    while time.monotonic() - started < PRUNE_SECONDS:
        async with sessionmaker() as session, session.begin():
            count = int((await session.execute(batch)).rowcount)  # type: ignore[attr-defined]
        deleted += count
        if count < PRUNE_BATCH:
            break
    return deleted
