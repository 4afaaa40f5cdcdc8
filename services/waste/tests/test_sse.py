"""Progress over SSE against a real uvicorn: live events, Last-Event-ID, heartbeats, the end of
the stream, gap recovery, and one Redis subscription for all clients."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from PIL import Image
from redis.asyncio import Redis
from sqlalchemy import delete, update

from ecosort_common.testing import TokenIssuer
from ecosort_waste.config import Settings
from ecosort_waste.models import Analysis
from ecosort_waste.progress import (
    events_key,
    publish_event,
    publish_final,
    publish_requeued,
    read_state,
    state_key,
)

API = "/api/v1/waste"


class Stream:
    """An open SSE response, parsed into events (and heartbeat comments) as they arrive, as an
    EventSource does: `retry:` sets the reconnection delay, and a block without data is no
    event."""

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self._lines = lines
        self.comments = 0
        self.retry: int | None = None

    async def next_event(self, wait_seconds: float = 5.0) -> dict[str, Any] | None:
        return await asyncio.wait_for(self._next(), wait_seconds)

    async def _next(self) -> dict[str, Any] | None:
        fields: dict[str, Any] = {}
        async for line in self._lines:
            if line == "":
                if "data" in fields:
                    return fields
                fields = {}
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            name, _, value = line.partition(":")
            if name == "retry":
                self.retry = int(value)
            else:
                fields[name] = value.removeprefix(" ")
        return None  # the server ended the stream

    async def rest(self, wait_seconds: float = 5.0) -> list[dict[str, Any]]:
        events = []
        while (event := await self.next_event(wait_seconds)) is not None:
            events.append(event)
        return events


@pytest.fixture
def user(token_issuer: TokenIssuer) -> tuple[uuid.UUID, dict[str, str]]:
    user_id = uuid.uuid4()
    return user_id, {"Authorization": f"Bearer {token_issuer.token(user_id)}"}


@pytest.fixture
async def analysis_id(
    live_url: str, user: tuple[uuid.UUID, dict[str, str]], enqueued: list[uuid.UUID]
) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="JPEG")
    async with AsyncClient(base_url=live_url) as http:
        response = await http.post(
            f"{API}/analyses", headers=user[1], files={"image": ("a.jpg", buf.getvalue())}
        )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


@asynccontextmanager
async def open_stream(
    live_url: str, analysis_id: str, headers: dict[str, str]
) -> AsyncIterator[Stream]:
    async with (
        AsyncClient(base_url=live_url, timeout=10) as http,
        http.stream("GET", f"{API}/analyses/{analysis_id}/events", headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response.aiter_lines())


async def wait_for_watchers(app: FastAPI, count: int) -> None:
    for _ in range(200):
        if app.state.progress_hub.watcher_count == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {count} watchers, have {app.state.progress_hub.watcher_count}")


def progress(stage: str, value: int) -> dict[str, Any]:
    return {"status": "processing", "stage": stage, "progress": value}


async def test_live_events_then_the_stream_ends(
    app: FastAPI, live_url: str, analysis_id: str, user: tuple[uuid.UUID, dict[str, str]]
) -> None:
    redis: Redis = app.state.redis
    async with open_stream(live_url, analysis_id, user[1]) as stream:
        await wait_for_watchers(app, 1)
        await publish_event(redis, analysis_id, "progress", progress("load", 10))
        first = await stream.next_event()
        assert first == {
            "id": "1",
            "event": "progress",
            "data": json.dumps(progress("load", 10), separators=(",", ":")),
        }
        await publish_event(redis, analysis_id, "progress", progress("classify", 50))
        await publish_event(
            redis, analysis_id, "completed", {"status": "completed", "progress": 100}
        )
        rest = await stream.rest()
    assert [(e["id"], e["event"]) for e in rest] == [("2", "progress"), ("3", "completed")]
    await wait_for_watchers(app, 0)  # the finished client is no longer fanned out to


async def test_the_first_frame_sets_the_reconnection_delay(
    live_url: str,
    analysis_id: str,
    user: tuple[uuid.UUID, dict[str, str]],
    settings: Settings,
) -> None:
    """`retry:` comes first and at once: an EventSource dropped before any event still waits
    SSE_RETRY_MILLISECONDS, not the browser's default (~3 s), before it reconnects."""
    raw = b""
    async with (
        AsyncClient(base_url=live_url, timeout=10) as http,
        http.stream("GET", f"{API}/analyses/{analysis_id}/events", headers=user[1]) as response,
    ):
        assert response.status_code == 200
        async for chunk in response.aiter_raw():
            raw += chunk
            if b"\r\n\r\n" in raw:
                break
    first_frame = raw.partition(b"\r\n\r\n")[0]
    assert first_frame == f"retry: {settings.sse_retry_milliseconds}".encode()
    assert settings.sse_retry_milliseconds == 1500  # the tests' setting, not the default


async def test_resumes_after_last_event_id(
    app: FastAPI, live_url: str, analysis_id: str, user: tuple[uuid.UUID, dict[str, str]]
) -> None:
    redis: Redis = app.state.redis
    for stage, value in [("load", 10), ("classify", 40), ("guide", 80)]:
        await publish_event(redis, analysis_id, "progress", progress(stage, value))
    headers = {**user[1], "Last-Event-ID": "1"}
    async with open_stream(live_url, analysis_id, headers) as stream:
        assert [(await stream.next_event())["id"] for _ in range(2)] == ["2", "3"]  # type: ignore[index]
        await publish_event(redis, analysis_id, "failed", {"status": "failed", "error": "x"})
        assert [(e["id"], e["event"]) for e in await stream.rest()] == [("4", "failed")]


async def test_a_lost_message_is_recovered_from_the_log(
    app: FastAPI, live_url: str, analysis_id: str, user: tuple[uuid.UUID, dict[str, str]]
) -> None:
    redis: Redis = app.state.redis
    async with open_stream(live_url, analysis_id, user[1]) as stream:
        await wait_for_watchers(app, 1)
        await publish_event(redis, analysis_id, "progress", progress("load", 10))
        assert (await stream.next_event())["id"] == "1"  # type: ignore[index]
        # Event 2 reaches the log but its pub/sub message is lost (pub/sub is at-most-once).
        seq = await redis.hincrby(state_key(analysis_id), "seq", 1)
        data = json.dumps(progress("classify", 50))
        await redis.xadd(events_key(analysis_id), {"seq": seq, "event": "progress", "data": data})
        await publish_event(redis, analysis_id, "completed", {"status": "completed"})
        events = await stream.rest()
    assert [e["id"] for e in events] == ["2", "3"]


async def test_finished_analysis_without_a_log_answers_from_the_database(
    app: FastAPI,
    live_url: str,
    analysis_id: str,
    user: tuple[uuid.UUID, dict[str, str]],
    settings: Settings,
) -> None:
    result = {"category": "glass_bottle", "confidence": 0.9}
    async with app.state.sessionmaker() as session:
        await session.execute(
            update(Analysis)
            .where(Analysis.id == uuid.UUID(analysis_id))
            .values(status="completed", progress=100, stage="save", result=result, attempts=1)
        )
        await session.commit()
    async with open_stream(live_url, analysis_id, user[1]) as stream:
        events = await stream.rest()
    assert stream.retry == settings.sse_retry_milliseconds  # even a one-event stream has it
    assert len(events) == 1 and events[0]["event"] == "completed"
    assert events[0]["id"] == "5"  # the id the final event of a first run had in the lost log
    assert json.loads(events[0]["data"]) == {
        "status": "completed",
        "stage": "save",
        "progress": 100,
        "result": result,
        "error": None,
    }
    # The rebuilt final event is in the log now: reconnecting with its id is told to stop.
    async with AsyncClient(base_url=live_url) as http:
        again = await http.get(
            f"{API}/analyses/{analysis_id}/events",
            headers={**user[1], "Last-Event-ID": events[0]["id"]},
        )
    assert again.status_code == 204, again.text


async def test_a_finished_analysis_whose_log_lacks_the_final_event_ends_at_once(
    app: FastAPI, live_url: str, analysis_id: str, user: tuple[uuid.UUID, dict[str, str]]
) -> None:
    """The reaper failed the analysis but could not publish its final event (Redis blinked
    after the commit): the log has the run's progress and no end. The database, read as the
    stream opens, already says how it ended: the stream ends with it, not a resync later."""
    redis: Redis = app.state.redis
    await publish_event(redis, analysis_id, "progress", progress("load", 5))
    await publish_event(redis, analysis_id, "progress", progress("classify", 20))
    async with app.state.sessionmaker() as session:
        await session.execute(
            update(Analysis)
            .where(Analysis.id == uuid.UUID(analysis_id))
            .values(status="failed", stage="classify", progress=20, error="did not finish")
        )
        await session.commit()
    async with open_stream(live_url, analysis_id, user[1]) as stream:
        events = await stream.rest()
    assert [(e["id"], e["event"]) for e in events] == [
        ("1", "progress"),
        ("2", "progress"),
        ("3", "failed"),
    ]
    assert json.loads(events[-1]["data"])["error"] == "did not finish"
    assert stream.comments == 0  # no heartbeat: it did not wait for a resync


async def test_a_stream_ends_once_its_analysis_is_deleted(
    app: FastAPI, live_url: str, analysis_id: str, user: tuple[uuid.UUID, dict[str, str]]
) -> None:
    """The owner's account was deleted while the stream was open: no event will ever come, so
    the stream ends at the next resync, and the EventSource's reconnection is told 404."""
    async with open_stream(live_url, analysis_id, user[1]) as stream:
        await wait_for_watchers(app, 1)
        async with app.state.sessionmaker() as session:
            await session.execute(delete(Analysis).where(Analysis.id == uuid.UUID(analysis_id)))
            await session.commit()
        assert await stream.rest(wait_seconds=4) == []  # SSE_RESYNC_SECONDS=2 in the tests
    async with AsyncClient(base_url=live_url) as http:
        again = await http.get(f"{API}/analyses/{analysis_id}/events", headers=user[1])
    assert again.status_code == 404


async def test_an_id_from_a_lost_log_gets_this_log_from_its_start(
    app: FastAPI, live_url: str, analysis_id: str, user: tuple[uuid.UUID, dict[str, str]]
) -> None:
    """Redis lost the log the client's ids came from, and seq started again at 1: its
    Last-Event-ID is past this log's end."""
    redis: Redis = app.state.redis
    await publish_event(redis, analysis_id, "progress", progress("load", 10))
    async with open_stream(live_url, analysis_id, {**user[1], "Last-Event-ID": "50"}) as stream:
        assert (await stream.next_event(wait_seconds=2))["id"] == "1"  # type: ignore[index]
        await publish_event(redis, analysis_id, "completed", {"status": "completed"})
        assert [e["id"] for e in await stream.rest()] == ["2"]


async def test_a_stream_open_while_redis_loses_the_log_gets_what_follows_at_once(
    app: FastAPI, live_url: str, analysis_id: str, user: tuple[uuid.UUID, dict[str, str]]
) -> None:
    """Redis lost the analysis's hash and log mid-run (a restart without persistence, an
    eviction): the ids of the run's next events must still follow the ones the stream sent,
    or the stream takes them for old ones and waits for a resync to find the end."""
    redis: Redis = app.state.redis
    async with open_stream(live_url, analysis_id, user[1]) as stream:
        await wait_for_watchers(app, 1)
        for stage, value in [("load", 5), ("classify", 20), ("guide", 70)]:
            await publish_event(redis, analysis_id, "progress", progress(stage, value), attempt=1)
        assert [(await stream.next_event())["id"] for _ in range(3)] == ["1", "2", "3"]  # type: ignore[index]
        await redis.delete(state_key(analysis_id), events_key(analysis_id))
        await publish_event(redis, analysis_id, "progress", progress("save", 90), attempt=1)
        async with app.state.sessionmaker() as session:
            await session.execute(
                update(Analysis)
                .where(Analysis.id == uuid.UUID(analysis_id))
                .values(status="completed", stage="save", progress=100, attempts=1, result={})
            )
            await session.commit()
        await publish_final(
            redis, analysis_id, status="completed", stage="save", progress=100, result={}, attempt=1
        )
        # Within SSE_RESYNC_SECONDS (2 s in the tests): straight from pub/sub, not a resync.
        events = await stream.rest(wait_seconds=1.5)
    assert [(e["id"], e["event"]) for e in events] == [("4", "progress"), ("5", "completed")]


async def test_a_client_resuming_after_redis_lost_the_log_still_gets_the_end(
    app: FastAPI, live_url: str, analysis_id: str, user: tuple[uuid.UUID, dict[str, str]]
) -> None:
    """The client saw the first run's first two stages (ids 1 and 2). Redis then lost the
    analysis's hash and log; the run was re-queued and the next one failed. Had the ids started
    again at 1, the failure would be id 2, the client's Last-Event-ID, and the client would be
    told to stop (204) without ever seeing it."""
    redis: Redis = app.state.redis
    await publish_event(redis, analysis_id, "progress", progress("load", 5), attempt=1)
    await publish_event(redis, analysis_id, "progress", progress("classify", 20), attempt=1)
    await redis.delete(state_key(analysis_id), events_key(analysis_id))
    await publish_requeued(redis, analysis_id, next_attempt=2)
    async with app.state.sessionmaker() as session:
        await session.execute(
            update(Analysis)
            .where(Analysis.id == uuid.UUID(analysis_id))
            .values(status="failed", stage="load", progress=5, attempts=2, error="gave up")
        )
        await session.commit()
    await publish_final(
        redis, analysis_id, status="failed", stage="load", progress=5, error="gave up", attempt=2
    )
    async with open_stream(live_url, analysis_id, {**user[1], "Last-Event-ID": "2"}) as stream:
        events = await stream.rest()
    assert [(e["id"], e["event"]) for e in events] == [("10", "progress"), ("15", "failed")]


async def test_a_client_that_saw_the_final_event_is_told_to_stop(
    app: FastAPI, live_url: str, analysis_id: str, user: tuple[uuid.UUID, dict[str, str]]
) -> None:
    redis: Redis = app.state.redis
    async with app.state.sessionmaker() as session:
        await session.execute(
            update(Analysis)
            .where(Analysis.id == uuid.UUID(analysis_id))
            .values(
                status="failed",
                progress=10,
                stage="load",
                attempts=1,
                error="the stored photo is missing",
            )
        )
        await session.commit()
    await publish_event(redis, analysis_id, "progress", progress("load", 10), attempt=1)
    await publish_final(
        redis, analysis_id, status="failed", stage="load", progress=10, attempt=1, error="gone"
    )
    async with AsyncClient(base_url=live_url) as http:
        again = await http.get(
            f"{API}/analyses/{analysis_id}/events", headers={**user[1], "Last-Event-ID": "5"}
        )
        assert again.status_code == 204, again.text  # EventSource: stop reconnecting
    # Short of the end still gets the end.
    async with open_stream(live_url, analysis_id, {**user[1], "Last-Event-ID": "1"}) as stream:
        assert [(e["id"], e["event"]) for e in await stream.rest()] == [("5", "failed")]
    # An id past the end is from a log since lost: this log, final event included, from its start.
    async with open_stream(live_url, analysis_id, {**user[1], "Last-Event-ID": "99"}) as stream:
        assert [e["id"] for e in await stream.rest()] == ["1", "5"]


async def test_heartbeats_keep_an_idle_stream_alive(
    app: FastAPI, live_url: str, analysis_id: str, user: tuple[uuid.UUID, dict[str, str]]
) -> None:
    async with open_stream(live_url, analysis_id, user[1]) as stream:
        with pytest.raises(TimeoutError):
            await stream.next_event(wait_seconds=2.5)  # SSE_HEARTBEAT_SECONDS=1 in the tests
        assert stream.comments >= 2


async def test_many_clients_share_one_redis_subscription(
    app: FastAPI, live_url: str, analysis_id: str, user: tuple[uuid.UUID, dict[str, str]]
) -> None:
    redis: Redis = app.state.redis
    clients = 20

    async def subscribers() -> int:
        # Of this test's Redis database (other test runs use other databases). The process
        # holds others than the hub's (revoked sessions): what counts is that clients add none.
        db = redis.connection_pool.connection_kwargs.get("db", 0)
        listed = await redis.client_list()
        return sum(int(c["db"]) == db and int(c.get("sub", 0)) > 0 for c in listed)

    await asyncio.wait_for(app.state.subscription.subscribed.wait(), 5)
    before = await subscribers()
    async with AsyncClient(base_url=live_url, timeout=10) as http:

        async def watch() -> list[str]:
            path = f"{API}/analyses/{analysis_id}/events"
            async with http.stream("GET", path, headers=user[1]) as response:
                return [e["id"] for e in await Stream(response.aiter_lines()).rest()]

        watchers = [asyncio.create_task(watch()) for _ in range(clients)]
        await wait_for_watchers(app, clients)
        assert await subscribers() == before
        await publish_event(redis, analysis_id, "progress", progress("load", 10))
        await publish_event(redis, analysis_id, "completed", {"status": "completed"})
        results = await asyncio.wait_for(asyncio.gather(*watchers), 10)
    assert results == [["1", "2"]] * clients


async def test_bad_last_event_id_is_a_problem(
    live_url: str, analysis_id: str, user: tuple[uuid.UUID, dict[str, str]]
) -> None:
    async with AsyncClient(base_url=live_url) as http:
        response = await http.get(
            f"{API}/analyses/{analysis_id}/events", headers={**user[1], "Last-Event-ID": "abc"}
        )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_client_that_leaves_is_forgotten(
    app: FastAPI, live_url: str, analysis_id: str, user: tuple[uuid.UUID, dict[str, str]]
) -> None:
    async with open_stream(live_url, analysis_id, user[1]):
        await wait_for_watchers(app, 1)
    # The client hung up mid-stream: its mailbox must not linger in the hub.
    await wait_for_watchers(app, 0)


async def test_streams_end_when_the_server_shuts_down(
    app: FastAPI, live_url: str, analysis_id: str, user: tuple[uuid.UUID, dict[str, str]]
) -> None:
    hub = app.state.progress_hub
    try:
        async with open_stream(live_url, analysis_id, user[1]) as stream:
            await wait_for_watchers(app, 1)
            hub.end_streams()
            # Ends now, before the next heartbeat: uvicorn waits for open responses to end.
            assert await stream.rest(wait_seconds=0.5) == []
        await wait_for_watchers(app, 0)
    finally:
        hub.closing = False  # the app outlives this test


async def _until_hub_knows(hub: Any, analysis_id: str, seq: int) -> dict[str, str]:
    for _ in range(100):
        state = hub.state_of(analysis_id)
        if state is not None and int(state["seq"]) >= seq:
            return dict(state)
        await asyncio.sleep(0.02)
    raise AssertionError(f"the hub never reached seq {seq}: {hub.state_of(analysis_id)}")


async def test_the_hub_keeps_a_polled_state_current_from_the_events(app: FastAPI) -> None:
    hub, redis = app.state.progress_hub, app.state.redis
    await asyncio.wait_for(app.state.subscription.subscribed.wait(), 5)
    analysis_id = str(uuid.uuid4())
    await publish_event(redis, analysis_id, "progress", progress("load", 10))
    assert hub.state_of(analysis_id) is None  # never polled here: not kept
    generation = hub.generation
    hub.keep_state(analysis_id, await read_state(redis, analysis_id), generation)
    assert hub.state_of(analysis_id) == {
        "seq": "1",
        "status": "processing",
        "stage": "load",
        "progress": "10",
    }
    await publish_event(redis, analysis_id, "progress", {"progress": 30})
    assert (await _until_hub_knows(hub, analysis_id, 2))["progress"] == "30"
    # A re-queue's seq skips ahead to the next run's (progress.SEQS_PER_RUN): to the hub, a gap,
    # so it lets its copy go until a poll reads the hash again.
    await publish_requeued(redis, analysis_id, next_attempt=2)  # no stage any more
    for _ in range(100):
        if hub.state_of(analysis_id) is None:
            break
        await asyncio.sleep(0.02)
    assert hub.state_of(analysis_id) is None
    hub.keep_state(analysis_id, await read_state(redis, analysis_id), hub.generation)
    await publish_event(redis, analysis_id, "completed", {"status": "completed", "progress": 100})
    # Merged as Redis merges them into the hash: the hub's copy equals the hash.
    known = await _until_hub_knows(hub, analysis_id, 11)
    assert "stage" not in known
    assert known == await read_state(redis, analysis_id)


async def test_the_hub_refuses_a_state_older_than_what_it_saw(app: FastAPI) -> None:
    hub, redis = app.state.progress_hub, app.state.redis
    await asyncio.wait_for(app.state.subscription.subscribed.wait(), 5)
    analysis_id = str(uuid.uuid4())
    generation = hub.generation
    await publish_event(redis, analysis_id, "progress", progress("load", 10))
    stale = await read_state(redis, analysis_id)
    mailbox = hub.join(analysis_id)
    try:
        await publish_event(redis, analysis_id, "progress", progress("classify", 40))
        assert [event.seq for event in await mailbox.take(5)] == [2]  # it has gone by the hub
    finally:
        hub.leave(analysis_id, mailbox)
    hub.keep_state(analysis_id, stale, generation)
    assert hub.state_of(analysis_id) is None
    # A read from before a lost subscription (another generation) is not kept either.
    hub.keep_state(analysis_id, await read_state(redis, analysis_id), generation - 1)
    assert hub.state_of(analysis_id) is None
    hub.keep_state(analysis_id, await read_state(redis, analysis_id), hub.generation)
    assert hub.state_of(analysis_id)["stage"] == "classify"
