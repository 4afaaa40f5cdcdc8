"""Consuming events from Redis Streams: consumer groups, idempotency by event id, and recovery of
messages a crashed consumer left pending."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import (
    Column,
    DateTime,
    Index,
    MetaData,
    String,
    Table,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ecosort_common import aio
from ecosort_common.outbox import PRUNE_BATCH, delete_by_key, delete_in_batches, stream_name

# The event types the services exchange, each on its stream `events:<type>`: producers and
# consumers name them from here, so the two sides cannot drift apart.
USER_REGISTERED = "user.registered"
USER_DELETED = "user.deleted"
ANALYSIS_COMPLETED = "analysis.completed"
ANALYSIS_CORRECTED = "analysis.corrected"

DEAD_LETTER_STREAM = "events:dead-letter"
# A record of a processed event is what makes a redelivery harmless. Redelivery happens within
# minutes (a pending message is claimed once idle for claim_idle_ms, dead-lettered after
# max_deliveries), so after a month the record only takes space.
PROCESSED_RETENTION = timedelta(days=30)
PRUNE_EVERY_SECONDS = 600.0
log = structlog.get_logger("ecosort.events")


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    source: str
    occurred_at: str
    payload: dict[str, Any]


Handler = Callable[[AsyncSession, Event], Awaitable[None]]


def processed_events_table(metadata: MetaData) -> Table:
    return Table(
        "processed_events",
        metadata,
        Column("event_id", String(64), primary_key=True),
        Column("event_type", String(100), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Index("ix_processed_events_processed_at", "processed_at"),
    )


def _decode(fields: dict[str, str]) -> Event:
    return Event(
        id=fields["id"],
        type=fields["type"],
        source=fields.get("source", ""),
        occurred_at=fields.get("occurred_at", ""),
        payload=json.loads(fields.get("payload", "{}")),
    )


class EventConsumer:
    """Runs handlers for event types; a handler's effects and the record that the event was
    processed commit together, so a redelivered event is skipped rather than applied twice."""

    def __init__(
        self,
        *,
        redis: Redis,
        sessionmaker: async_sessionmaker[AsyncSession],
        processed: Table,
        group: str,
        handlers: dict[str, Handler],
        consumer: str | None = None,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        max_deliveries: int = 5,
    ) -> None:
        self.redis = redis
        self.sessionmaker = sessionmaker
        self.processed = processed
        self.group = group
        self.handlers = handlers
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.streams = {stream_name(t): t for t in handlers}

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def handle(self, stream: str, message_id: str, fields: dict[str, str]) -> None:
        event = _decode(fields)
        handler = self.handlers[self.streams[stream]]
        async with self.sessionmaker() as session, session.begin():
            first_time = (
                await session.execute(
                    insert(self.processed)
                    .values(event_id=event.id, event_type=event.type)
                    .on_conflict_do_nothing()
                    .returning(self.processed.c.event_id)
                )
            ).first()
            if first_time:
                await handler(session, event)
        await self.redis.xack(stream, self.group, message_id)

    async def _handle_safely(self, stream: str, message_id: str, fields: dict[str, str]) -> bool:
        """Whether it was handled; a failure leaves it pending, for recover_pending after
        claim_idle_ms."""
        try:
            await self.handle(stream, message_id, fields)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "event_handler_failed", stream=stream, message_id=message_id, error=repr(exc)
            )
            return False
        return True

    async def recover_pending(self) -> int:
        """Take over messages idle longer than claim_idle_ms (their consumer died or failed).
        One delivered more than max_deliveries times gets a last try, and goes to the
        dead-letter stream if that fails too, but only while the database answers: during an
        outage every event fails and its count grows, and nothing replays dead letters (a
        `user.deleted` among them would never be applied). While it does not, this raises, and
        the run loop backs off."""
        recovered = 0
        for stream in self.streams:
            _, messages, _ = await self.redis.xautoclaim(
                stream, self.group, self.consumer, min_idle_time=self.claim_idle_ms, count=100
            )
            for message_id, fields in messages:
                if fields is None:
                    continue
                last_try = await self._deliveries(stream, message_id) > self.max_deliveries
                if last_try:
                    await self._check_database()
                if await self._handle_safely(stream, message_id, fields):
                    recovered += 1
                elif last_try:
                    await self.redis.xadd(DEAD_LETTER_STREAM, {**fields, "stream": stream})
                    await self.redis.xack(stream, self.group, message_id)
                    log.error("event_dead_lettered", stream=stream, message_id=message_id)
        return recovered

    async def _check_database(self) -> None:
        async with self.sessionmaker() as session:
            await session.execute(text("SELECT 1"))

    async def _deliveries(self, stream: str, message_id: str) -> int:
        info = await self.redis.xpending_range(
            stream, self.group, min=message_id, max=message_id, count=1
        )
        return int(info[0]["times_delivered"]) if info else 0

    async def poll_once(self) -> int:
        batches = await self.redis.xreadgroup(
            self.group,
            self.consumer,
            dict.fromkeys(self.streams, ">"),
            count=100,
            block=self.block_ms,
        )
        handled = 0
        for stream, messages in batches or []:
            for message_id, fields in messages:
                await self._handle_safely(stream, message_id, fields)
                handled += 1
        return handled

    async def prune(self) -> int:
        """Delete the records of events processed longer than PROCESSED_RETENTION ago (in
        batches, for a few seconds at most); how many."""
        t = self.processed
        old = (
            select(t.c.event_id)
            .where(t.c.processed_at < datetime.now(UTC) - PROCESSED_RETENTION)
            .limit(PRUNE_BATCH)
        )
        return await delete_in_batches(self.sessionmaker, delete_by_key(t, t.c.event_id, old))

    async def run(self) -> None:
        backoff = 1.0
        pruned_at = -PRUNE_EVERY_SECONDS  # the first round at start
        while True:
            try:
                async with asyncio.timeout(aio.BACKGROUND_ROUND_SECONDS):
                    await self.ensure_groups()
                    await self.recover_pending()
                while True:
                    async with asyncio.timeout(aio.BACKGROUND_ROUND_SECONDS):
                        await self.poll_once()
                        await self.recover_pending()
                        if time.monotonic() - pruned_at > PRUNE_EVERY_SECONDS:
                            pruned_at = time.monotonic()
                            await self.prune()
                    backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis or the database is down: retry, never crash-loop
                log.warning("event_consumer_failed", group=self.group, error=type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
