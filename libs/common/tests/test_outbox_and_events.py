"""Events: written with the change, published by the relay, handled once, recovered."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import AsyncMock
from urllib.parse import urlsplit, urlunsplit

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import Delete, NullPool, create_engine, func, insert, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from ecosort_common import aio
from ecosort_common import events as events_module
from ecosort_common import outbox as outbox_module
from ecosort_common import redis as redis_module
from ecosort_common.app import create_service_app
from ecosort_common.events import (
    DEAD_LETTER_STREAM,
    PROCESSED_RETENTION,
    Event,
    EventConsumer,
    Handler,
)
from ecosort_common.outbox import (
    PUBLISHED_RETENTION,
    OutboxRelay,
    add_event,
    stream_name,
    unread_floor,
)
from ecosort_common.settings import ServiceSettings
from ecosort_common.testing import silencing_proxy, temporary_database

from .conftest import notes, outbox, processed_events


def _relay(app: FastAPI) -> OutboxRelay:
    return OutboxRelay(outbox, app.state.sessionmaker, app.state.redis, source="demo")


async def _record(session: AsyncSession, event: Event) -> None:
    await session.execute(insert(notes).values(text=event.payload["text"]))


def _consumer(
    app: FastAPI,
    group: str,
    name: str,
    *,
    handlers: dict[str, Handler] | None = None,
    sessionmaker: async_sessionmaker[AsyncSession] | None = None,
    **options: int,
) -> EventConsumer:
    """A consumer of `handlers` (by default `note.added`, recorded in `notes`)."""
    return EventConsumer(
        redis=app.state.redis,
        sessionmaker=sessionmaker or app.state.sessionmaker,
        processed=processed_events,
        group=group,
        consumer=name,
        handlers=handlers or {"note.added": _record},
        block_ms=50,
        **options,
    )


async def _published(app: FastAPI, event_type: str, count: int) -> OutboxRelay:
    """`count` events with texts "0", "1", ..., written and published; the relay that did it."""
    async with app.state.sessionmaker() as session, session.begin():
        for number in range(count):
            await add_event(session, outbox, event_type, {"text": str(number)})
    relay = _relay(app)
    while await relay.publish_pending():
        pass
    return relay


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


async def test_relays_of_several_replicas_publish_each_event_once(app: FastAPI) -> None:
    """Every replica of a service runs a relay on the one outbox: rows one relay is publishing
    are skipped by the others (SKIP LOCKED), not published a second time."""
    redis: Redis = app.state.redis
    text = uuid.uuid4().hex
    async with app.state.sessionmaker() as session, session.begin():
        ids = [
            str(await add_event(session, outbox, "note.replicas", {"text": text, "n": n}))
            for n in range(20)
        ]
    relays = [_relay(app) for _ in range(4)]
    published = await asyncio.gather(*(relay.publish_pending() for relay in relays))
    assert sum(published) == len(ids)
    entries = await redis.xrange(stream_name("note.replicas"))
    assert sorted(f["id"] for _, f in entries if f["id"] in ids) == sorted(ids)


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

    consumer = _consumer(app, "failing", "c1", handlers={"note.failing": broken})
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


async def test_events_are_not_dead_lettered_while_the_database_is_down(app: FastAPI) -> None:
    """Every event fails while the database is down, and its delivery count grows: only a
    message that still fails once the database answers is poison. The others wait, and are
    handled when it is back."""
    redis: Redis = app.state.redis
    dead_letters = await redis.xlen(DEAD_LETTER_STREAM)
    unreachable = create_async_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 1}
    )

    def consumer(sessionmaker: async_sessionmaker[AsyncSession]) -> EventConsumer:
        return _consumer(
            app,
            "outage",
            "c1",
            handlers={"note.outage": _record},
            sessionmaker=sessionmaker,
            claim_idle_ms=0,
            max_deliveries=1,
        )

    down = consumer(async_sessionmaker(unreachable))
    await down.ensure_groups()
    payload = json.dumps({"text": "kept through the outage"})
    await redis.xadd(
        stream_name("note.outage"),
        {"id": str(uuid.uuid4()), "type": "note.outage", "payload": payload},
    )
    await down.poll_once()  # delivered once, failed
    for _ in range(3):  # claimed again and again while the outage lasts
        with pytest.raises(OperationalError):
            await down.recover_pending()
    assert await redis.xlen(DEAD_LETTER_STREAM) == dead_letters
    await unreachable.dispose()

    assert await consumer(app.state.sessionmaker).recover_pending() == 1  # the database is back
    assert await _count_notes(app, "kept through the outage") == 1
    assert await redis.xlen(DEAD_LETTER_STREAM) == dead_letters


async def test_a_message_failing_while_the_database_answers_is_dead_lettered(
    app: FastAPI,
) -> None:
    redis: Redis = app.state.redis
    dead_letters = await redis.xlen(DEAD_LETTER_STREAM)

    async def poison(session: AsyncSession, event: Event) -> None:
        raise ValueError("cannot be handled")

    consumer = _consumer(
        app,
        "poisoned",
        "c1",
        handlers={"note.poison": poison},
        claim_idle_ms=0,
        max_deliveries=2,
    )
    await consumer.ensure_groups()
    await redis.xadd(stream_name("note.poison"), {"id": str(uuid.uuid4()), "type": "note.poison"})
    await consumer.poll_once()  # the first delivery
    assert await consumer.recover_pending() == 0  # the second: within the limit
    assert await redis.xlen(DEAD_LETTER_STREAM) == dead_letters
    assert await consumer.recover_pending() == 0  # past it: a last try, then dead-lettered
    assert await redis.xlen(DEAD_LETTER_STREAM) == dead_letters + 1
    assert (await redis.xpending(stream_name("note.poison"), "poisoned"))["pending"] == 0


async def test_a_stream_keeps_what_a_group_has_not_read_or_acknowledged(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer that is down while events pile up gets every one of them when it is back."""
    monkeypatch.setattr(outbox_module, "TRIM_KEEPS", timedelta(0))  # these events as if old
    redis: Redis = app.state.redis
    stream = stream_name("note.trimmed")
    await redis.xgroup_create(stream, "slow", id="0", mkstream=True)
    await redis.xgroup_create(stream, "fast", id="0", mkstream=True)
    relay = await _published(app, "note.trimmed", 300)
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


async def test_a_group_created_after_another_has_read_all_still_gets_the_recent_events(
    app: FastAPI,
) -> None:
    """Redis restarted empty: waste's consumer is back, auth's is still waiting out its backoff.
    What waste has read and acknowledged meanwhile, auth's group (created at `0`) needs too."""
    redis: Redis = app.state.redis
    stream = stream_name("note.late")
    await redis.xgroup_create(stream, "early", id="0", mkstream=True)
    relay = await _published(app, "note.late", 300)
    read = await redis.xreadgroup("early", "e", {stream: ">"}, count=300)
    await redis.xack(stream, "early", *(entry for entry, _ in read[0][1]))

    await relay.trim()

    await redis.xgroup_create(stream, "late", id="0")
    late = await redis.xreadgroup("late", "l", {stream: ">"}, count=1000)
    assert [json.loads(fields["payload"])["text"] for _, fields in late[0][1]] == [
        str(number) for number in range(300)
    ]


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


async def test_records_of_processed_events_are_pruned_by_their_primary_key(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of old records is looked up by event id: not joined to a scan of the whole table,
    which the planner chose for `IN (...)` (41 ms a batch at 300k records)."""
    batches: list[Delete] = []

    async def kept(sessionmaker: object, batch: Delete) -> int:
        batches.append(batch)
        return 0

    monkeypatch.setattr(events_module, "delete_in_batches", kept)
    await _consumer(app, "pruner", "p").prune()
    with temporary_database("prune_plan") as url:
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.begin() as conn:
                processed_events.create(conn)
                conn.exec_driver_sql(
                    "INSERT INTO processed_events SELECT md5(n::text), 'note.added', "
                    "now() - interval '40 days' FROM generate_series(1, 20000) n"
                )
                conn.exec_driver_sql("ANALYZE processed_events")
                compiled = batches[0].compile(engine)
                plan = conn.exec_driver_sql(
                    f"EXPLAIN (FORMAT JSON) {compiled}", compiled.params
                ).scalar_one()[0]["Plan"]
        finally:
            engine.dispose()
    assert "pk_processed_events" in _indexes_in(plan)


def _indexes_in(plan: dict[str, Any]) -> set[str]:
    found = {plan["Index Name"]} if "Index Name" in plan else set()
    for child in plan.get("Plans", []):
        found |= _indexes_in(child)
    return found


@pytest.mark.parametrize("store", ["redis", "postgresql"])
async def test_relay_and_consumer_get_past_a_connection_gone_silent(
    app: FastAPI, settings: ServiceSettings, monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    """No request deadline bounds the background loops: a Redis or PostgreSQL connection that
    stops answering (a failover, a half-open TCP connection) must fail them over to a new one,
    not hold them: Redis's by a socket timeout, PostgreSQL's by a bound on each round."""
    monkeypatch.setattr(redis_module, "BACKGROUND_SOCKET_TIMEOUT_SECONDS", 2.0)
    monkeypatch.setattr(aio, "BACKGROUND_ROUND_SECONDS", 4.0)
    url = urlsplit(settings.redis_url if store == "redis" else settings.database_url)
    assert url.hostname is not None and url.port is not None

    async def publish(text: str) -> None:
        async with app.state.sessionmaker() as session, session.begin():
            await add_event(session, outbox, f"note.{store}-failover", {"text": text})

    async def handled(text: str, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if await _count_notes(app, text):
                return True
            await asyncio.sleep(0.05)
        return False

    with silencing_proxy((url.hostname, url.port)) as (port, silence):
        user = f"{url.username}@" if url.username else ""
        via_proxy = urlunsplit(url._replace(netloc=f"{user}127.0.0.1:{port}"))
        service = create_service_app(
            settings.model_copy(
                update={
                    "service_name": f"{store}-failover",
                    {"redis": "redis_url", "postgresql": "database_url"}[store]: via_proxy,
                    "outbox_relay_enabled": True,
                    "outbox_poll_seconds": 0.05,
                }
            ),
            title="failover",
            outbox=outbox,
            consumers={f"note.{store}-failover": _record},
            processed_events=processed_events,
        )
        async with LifespanManager(service):
            before, after = uuid.uuid4().hex, uuid.uuid4().hex
            await publish(before)
            assert await handled(before, 10)  # published and consumed through the proxy
            silence()
            await publish(after)
            # PostgreSQL: each silent pooled connection costs a round (2 s here), then up to
            # 10 s of psycopg trying to cancel its query before it closes it.
            assert await handled(after, 60)
