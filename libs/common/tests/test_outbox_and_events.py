"""Events: written with the change, published by the relay, handled once, recovered."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from unittest.mock import AsyncMock

import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ecosort_common import outbox as outbox_module
from ecosort_common.events import PROCESSED_RETENTION, Event, EventConsumer
from ecosort_common.outbox import (
    PUBLISHED_RETENTION,
    OutboxRelay,
    add_event,
    stream_name,
    unread_floor,
)

from .conftest import notes, outbox, processed_events


def _relay(app: FastAPI) -> OutboxRelay:
    return OutboxRelay(outbox, app.state.sessionmaker, app.state.redis, source="demo")


def _consumer(app: FastAPI, group: str, name: str, **options: int) -> EventConsumer:
    async def record(session: AsyncSession, event: Event) -> None:
        await session.execute(insert(notes).values(text=event.payload["text"]))

    return EventConsumer(
        redis=app.state.redis,
        sessionmaker=app.state.sessionmaker,
        processed=processed_events,
        group=group,
        consumer=name,
        handlers={"note.added": record},
        block_ms=50,
        **options,
    )


async def _count_notes(app: FastAPI, text: str) -> int:
    async with app.state.sessionmaker() as session:
        query = select(func.count()).select_from(notes).where(notes.c.text == text)
        return int((await session.execute(query)).scalar_one())


async def test_event_of_a_rolled_back_change_is_never_published(app: FastAPI) -> None:
    redis: Redis = app.state.redis
    async with app.state.sessionmaker() as session:
        await add_event(session, outbox, "note.rolledback", {"text": "x"})
        await session.rollback()
    await _relay(app).publish_pending()
    assert await redis.xlen(stream_name("note.rolledback")) == 0


async def test_relay_publishes_committed_events_once(app: FastAPI) -> None:
    redis: Redis = app.state.redis
    text = uuid.uuid4().hex
    async with app.state.sessionmaker() as session, session.begin():
        event_id = await add_event(session, outbox, "note.published", {"text": text})
    assert await _relay(app).publish_pending() >= 1
    assert await _relay(app).publish_pending() == 0
    entries = await redis.xrange(stream_name("note.published"))
    ours = [fields for _, fields in entries if fields["id"] == str(event_id)]
    assert len(ours) == 1
    assert json.loads(ours[0]["payload"]) == {"text": text}
    assert ours[0]["source"] == "demo"


async def test_duplicate_delivery_is_applied_once(app: FastAPI) -> None:
    redis: Redis = app.state.redis
    text = uuid.uuid4().hex
    fields = {
        "id": str(uuid.uuid4()),
        "type": "note.added",
        "source": "test",
        "occurred_at": "2026-01-01T00:00:00+00:00",
        "payload": json.dumps({"text": text}),
    }
    consumer = _consumer(app, "dupes", "c1")
    await consumer.ensure_groups()
    await redis.xadd(stream_name("note.added"), fields)
    await redis.xadd(stream_name("note.added"), fields)  # at-least-once: the relay may resend
    assert await consumer.poll_once() >= 2
    assert await _count_notes(app, text) == 1
    pending = await redis.xpending(stream_name("note.added"), "dupes")
    assert pending["pending"] == 0


async def test_pending_message_of_a_crashed_consumer_is_recovered(app: FastAPI) -> None:
    redis: Redis = app.state.redis
    text = uuid.uuid4().hex
    crashed = _consumer(app, "recovery", "crashed")
    await crashed.ensure_groups()
    await redis.xadd(
        stream_name("note.added"),
        {"id": str(uuid.uuid4()), "type": "note.added", "payload": json.dumps({"text": text})},
    )
    # The crashed consumer received the message and died before handling or acknowledging it.
    delivered = await redis.xreadgroup("recovery", "crashed", {stream_name("note.added"): ">"})
    assert delivered
    assert await _count_notes(app, text) == 0
    survivor = _consumer(app, "recovery", "survivor", claim_idle_ms=0)
    assert await survivor.recover_pending() >= 1
    assert await _count_notes(app, text) == 1
    assert (await redis.xpending(stream_name("note.added"), "recovery"))["pending"] == 0


async def test_failing_handler_leaves_the_message_pending(app: FastAPI) -> None:
    redis: Redis = app.state.redis

    async def broken(session: AsyncSession, event: Event) -> None:
        raise RuntimeError("database said no")

    consumer = EventConsumer(
        redis=redis,
        sessionmaker=app.state.sessionmaker,
        processed=processed_events,
        group="failing",
        consumer="c1",
        handlers={"note.failing": broken},
        block_ms=50,
    )
    await consumer.ensure_groups()
    event_id = str(uuid.uuid4())
    await redis.xadd(stream_name("note.failing"), {"id": event_id, "type": "note.failing"})
    await consumer.poll_once()
    assert (await redis.xpending(stream_name("note.failing"), "failing"))["pending"] == 1
    async with app.state.sessionmaker() as session:
        seen = await session.execute(
            select(processed_events).where(processed_events.c.event_id == event_id)
        )
        assert seen.first() is None  # rolled back with the handler: it will be retried


async def test_a_stream_keeps_what_a_group_has_not_read_or_acknowledged(app: FastAPI) -> None:
    """A consumer that is down while events pile up gets every one of them when it is back."""
    redis: Redis = app.state.redis
    stream = stream_name("note.trimmed")
    await redis.xgroup_create(stream, "slow", id="0", mkstream=True)
    await redis.xgroup_create(stream, "fast", id="0", mkstream=True)
    async with app.state.sessionmaker() as session, session.begin():
        for number in range(300):
            await add_event(session, outbox, "note.trimmed", {"text": str(number)})
    relay = _relay(app)
    while await relay.publish_pending():
        pass
    # "fast" read all and acknowledged all; "slow" read 250, acknowledged the first 100.
    read = await redis.xreadgroup("fast", "f", {stream: ">"}, count=300)
    await redis.xack(stream, "fast", *(entry for entry, _ in read[0][1]))
    read = await redis.xreadgroup("slow", "s", {stream: ">"}, count=250)
    await redis.xack(stream, "slow", *(entry for entry, _ in read[0][1][:100]))

    await relay.trim()

    remaining = [json.loads(fields["payload"])["text"] for _, fields in await redis.xrange(stream)]
    assert remaining[-200:] == [str(number) for number in range(100, 300)]
    assert len(remaining) < 300  # trimmed (approximately: whole nodes of the stream)
    await redis.xack(stream, "slow", *(entry for entry, _ in read[0][1][100:]))
    rest = await redis.xreadgroup("slow", "s", {stream: ">"}, count=300)
    assert len(rest[0][1]) == 50  # all that it had not read


async def test_a_stream_no_group_reads_is_not_trimmed_below_its_cap(app: FastAPI) -> None:
    redis: Redis = app.state.redis
    async with app.state.sessionmaker() as session, session.begin():
        await add_event(session, outbox, "note.unread", {"text": "kept"})
    relay = _relay(app)
    await relay.publish_pending()

    await relay.trim()

    assert await redis.xlen(stream_name("note.unread")) == 1


async def test_a_group_acknowledging_its_last_entry_meanwhile_does_not_stop_the_trim(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis: Redis = app.state.redis
    stream = stream_name("note.raced")
    await redis.xgroup_create(stream, "racer", id="0", mkstream=True)
    async with app.state.sessionmaker() as session, session.begin():
        await add_event(session, outbox, "note.raced", {"text": "x"})
    relay = _relay(app)
    await relay.publish_pending()
    read = await redis.xreadgroup("racer", "r", {stream: ">"})
    groups = await redis.xinfo_groups(stream)  # says 1 pending
    await redis.xack(stream, "racer", read[0][1][0][0])  # ... which is acknowledged now
    monkeypatch.setattr(redis, "xinfo_groups", AsyncMock(return_value=groups))

    assert await unread_floor(redis, stream) == read[0][1][0][0]


async def test_published_events_leave_the_outbox_after_their_retention(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "PRUNE_BATCH", 2)  # a backlog of several batches
    async with app.state.sessionmaker() as session, session.begin():
        kept = await add_event(session, outbox, "note.kept", {"text": "published yesterday"})
        unsent = await add_event(session, outbox, "note.unsent", {"text": "never published"})
        old = [await add_event(session, outbox, "note.old", {"text": str(n)}) for n in range(5)]
        ages = {kept: timedelta(days=1)} | dict.fromkeys(old, PUBLISHED_RETENTION + timedelta(1))
        for event_id, age in ages.items():
            await session.execute(
                update(outbox)
                .where(outbox.c.id == event_id)
                .values(published_at=datetime.now(UTC) - age)
            )

    assert await _relay(app).prune() >= 5  # in one round

    async with app.state.sessionmaker() as session:
        left = set((await session.execute(select(outbox.c.id))).scalars())
    assert {kept, unsent} <= left and not left & set(old)


async def test_records_of_processed_events_go_after_their_retention(app: FastAPI) -> None:
    recent, old = uuid.uuid4().hex, uuid.uuid4().hex
    async with app.state.sessionmaker() as session, session.begin():
        long_ago = datetime.now(UTC) - PROCESSED_RETENTION - timedelta(hours=1)
        for event_id, processed_at in ((recent, datetime.now(UTC)), (old, long_ago)):
            await session.execute(
                insert(processed_events).values(
                    event_id=event_id, event_type="note.added", processed_at=processed_at
                )
            )

    assert await _consumer(app, "pruner", "p").prune() >= 1

    async with app.state.sessionmaker() as session:
        left = set((await session.execute(select(processed_events.c.event_id))).scalars())
    assert recent in left and old not in left
