"""reaper.reap_once against real PostgreSQL and Redis: stuck analyses (their run's lease gone,
or past the deadline) are re-queued while attempts remain, else failed with a reason; queued ones
the broker holds no message for are enqueued again."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from sqlalchemy import delete, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ecosort_common import aio
from ecosort_common.db import create_engine, create_sessionmaker
from ecosort_common.redis import create_redis
from ecosort_common.testing import silencing_proxy
from ecosort_waste import pipeline, progress, reaper
from ecosort_waste.models import Analysis
from ecosort_waste.reaper import DID_NOT_FINISH, BrokerQueue, reap_once, sweep_unread_uploads
from ecosort_waste.storage import LocalStorage, ObjectNotFound

DEADLINE = 60.0
GRACE = 20.0
UNSENT_AFTER = 10.0
LIVE_HOLD = DEADLINE + 60
MAX_ATTEMPTS = 3


async def add(
    sessionmaker: async_sessionmaker[AsyncSession], *, age_seconds: float, **values: Any
) -> uuid.UUID:
    then = datetime.now(UTC) - timedelta(seconds=age_seconds)
    columns: dict[str, Any] = {
        "id": uuid.uuid4(),
        "owner_id": uuid.uuid4(),
        "progress": 0,
        "image_key": "analyses/x.jpg",
        "image_sha256": "0" * 64,
        "created_at": then,
        "updated_at": then,
    }
    async with sessionmaker() as session, session.begin():
        session.add(Analysis(**(columns | values)))
    return uuid.UUID(str(columns["id"]))


async def status_of(
    sessionmaker: async_sessionmaker[AsyncSession], analysis_id: uuid.UUID
) -> Analysis:
    async with sessionmaker() as session:
        row = await session.get(Analysis, analysis_id)
        assert row is not None
        return row


@pytest.fixture(autouse=True)
async def no_other_analyses(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """The reaper counts every queued analysis: each test starts with none of the others'."""
    async with sessionmaker() as session, session.begin():
        await session.execute(delete(Analysis))


@pytest.fixture
async def broker(redis: Redis) -> AsyncIterator[BrokerQueue]:
    """The broker's list of waiting messages and index of held ones, this test's own."""
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    queue = BrokerQueue(f"{prefix}analyses", f"{prefix}unacked_index", LIVE_HOLD)
    yield queue
    await redis.delete(queue.waiting_key, queue.held_index_key)


@pytest.fixture
def celery_list(redis_url: str) -> Iterator[SyncRedis]:
    """A synchronous client, as Celery's `send_task` uses to push a message."""
    client = SyncRedis.from_url(redis_url)
    yield client
    client.close()


async def reap(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    broker: BrokerQueue,
    celery_list: SyncRedis,
    live_status_at_send: dict[uuid.UUID, bytes | None] | None = None,
) -> tuple[Any, list[uuid.UUID]]:
    """One pass; what it sends is recorded and pushed to the waiting list, as Celery would,
    with the status watchers had been told at that moment."""
    sent: list[uuid.UUID] = []

    def enqueue(analysis_id: uuid.UUID) -> None:
        sent.append(analysis_id)
        if live_status_at_send is not None:
            live_status_at_send[analysis_id] = celery_list.hget(
                progress.state_key(analysis_id), "status"
            )
        celery_list.lpush(broker.waiting_key, str(analysis_id))

    report = await reap_once(
        sessionmaker,
        redis,
        enqueue,
        broker=broker,
        deadline_seconds=DEADLINE,
        lease_grace_seconds=GRACE,
        requeue_unsent_after_seconds=UNSENT_AFTER,
        max_attempts=MAX_ATTEMPTS,
    )
    return report, sent


async def hold(redis: Redis, broker: BrokerQueue, tag: str, age_seconds: float) -> None:
    """A message a worker took `age_seconds` ago and has not acknowledged (kombu's index)."""
    await redis.zadd(broker.held_index_key, {tag: time.time() - age_seconds})


async def redis_kept_keys_for(redis: Redis, seconds: float) -> None:
    """Redis has held the reaper's epoch for `seconds`: it lost no lease since."""
    await redis.set(reaper.REDIS_EPOCH_KEY, time.time() - seconds)


async def processing(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    *,
    for_seconds: float,
    attempts: int = 1,
    lease: str | None = None,
) -> uuid.UUID:
    """An analysis its run claimed `for_seconds` ago, and the run's lease as Redis holds it."""
    analysis_id = await add(
        sessionmaker,
        age_seconds=for_seconds,
        status="processing",
        stage="load",
        attempts=attempts,
        started_at=datetime.now(UTC) - timedelta(seconds=for_seconds),
    )
    data = {"status": "processing", "stage": "classify", "progress": 20}
    await progress.publish_event(redis, analysis_id, "progress", data, attempt=attempts)
    if lease is not None:
        await redis.set(pipeline.lease_key(analysis_id), lease, ex=60)
    return analysis_id


async def test_stuck_analyses_are_requeued_or_failed_and_fresh_ones_left_alone(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    broker: BrokerQueue,
    celery_list: SyncRedis,
) -> None:
    long_ago = datetime.now(UTC) - timedelta(seconds=DEADLINE * 2)
    retryable = await add(
        sessionmaker,
        age_seconds=DEADLINE * 2,
        status="processing",
        stage="classify",
        attempts=1,
        started_at=long_ago,
    )
    exhausted = await add(
        sessionmaker,
        age_seconds=DEADLINE * 2,
        status="processing",
        stage="guide",
        attempts=MAX_ATTEMPTS,
        started_at=long_ago,
    )
    running = await add(
        sessionmaker,
        age_seconds=1,
        status="processing",
        stage="classify",
        attempts=1,
        started_at=datetime.now(UTC),
    )
    finished = await add(sessionmaker, age_seconds=DEADLINE * 2, status="completed", attempts=1)
    # How far the lost runs got, which only Redis knows: the database has their claims.
    for analysis_id, stage, reached in [(retryable, "classify", 20), (exhausted, "save", 90)]:
        data = {"status": "processing", "stage": stage, "progress": reached}
        await progress.publish_event(redis, analysis_id, "progress", data, attempt=1)

    status_at_send: dict[uuid.UUID, bytes | None] = {}
    report, enqueued = await reap(sessionmaker, redis, broker, celery_list, status_at_send)

    assert retryable in report.requeued and exhausted in report.failed
    assert retryable in enqueued and exhausted not in enqueued
    assert {running, finished}.isdisjoint(report.requeued + report.failed + enqueued)
    requeued_row = await status_of(sessionmaker, retryable)
    assert (requeued_row.status, requeued_row.stage, requeued_row.progress) == ("queued", None, 0)
    assert requeued_row.error is None  # waiting again is not a failure
    assert requeued_row.completed_at is None
    failed_row = await status_of(sessionmaker, exhausted)
    assert (failed_row.status, failed_row.stage, failed_row.progress) == ("failed", "save", 90)
    assert failed_row.error == DID_NOT_FINISH
    # Failed is a final state: it has a time like a completion's.
    assert failed_row.completed_at is not None
    assert failed_row.completed_at >= failed_row.created_at
    assert (await status_of(sessionmaker, running)).status == "processing"
    *_, failed_event = await progress.read_events(redis, exhausted)
    assert failed_event.event == "failed" and failed_event.data["error"] == DID_NOT_FINISH
    assert (failed_event.data["stage"], failed_event.data["progress"]) == ("save", 90)
    *_, requeued_event = await progress.read_events(redis, retryable)
    assert requeued_event.data["status"] == "queued"
    # Watchers heard "queued" before a worker could claim it, and no more from the lost run.
    assert status_at_send == {retryable: b"queued"}
    late = {"status": "processing", "stage": "guide", "progress": 70}
    await progress.publish_event(redis, retryable, "progress", late, attempt=1)
    assert (await progress.read_events(redis, retryable))[-1] == requeued_event

    # A second pass finds nothing new to do with them.
    report, enqueued = await reap(sessionmaker, redis, broker, celery_list)
    assert {retryable, exhausted}.isdisjoint(report.requeued + report.failed + enqueued)


async def test_a_run_without_its_lease_is_lost_before_the_deadline(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    broker: BrokerQueue,
    celery_list: SyncRedis,
) -> None:
    """Its worker was killed whole (kill -9, OOM): nobody renews the lease, and the reaper takes
    the analysis once the grace is over, as it would at the deadline."""
    await redis_kept_keys_for(redis, GRACE * 10)
    retryable = await processing(sessionmaker, redis, for_seconds=GRACE + 1)
    exhausted = await processing(sessionmaker, redis, for_seconds=GRACE + 1, attempts=MAX_ATTEMPTS)
    assert GRACE + 1 < DEADLINE

    status_at_send: dict[uuid.UUID, bytes | None] = {}
    report, enqueued = await reap(sessionmaker, redis, broker, celery_list, status_at_send)

    assert (report.requeued, report.failed, enqueued) == ([retryable], [exhausted], [retryable])
    assert status_at_send == {retryable: b"queued"}
    requeued = await status_of(sessionmaker, retryable)
    assert (requeued.status, requeued.attempts, requeued.error) == ("queued", 1, None)
    failed = await status_of(sessionmaker, exhausted)
    assert (failed.status, failed.stage, failed.error) == ("failed", "classify", DID_NOT_FINISH)
    *_, failed_event = await progress.read_events(redis, exhausted)
    assert (failed_event.event, failed_event.data["error"]) == ("failed", DID_NOT_FINISH)


async def test_live_runs_and_fresh_claims_wait_for_the_deadline(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    broker: BrokerQueue,
    celery_list: SyncRedis,
) -> None:
    """A lease renewed, a delivery claiming, a claim whose lease is not written yet (the claim
    writes the database first): none is lost. Past the deadline the run is taken whatever its
    lease says: it hangs."""
    await redis_kept_keys_for(redis, GRACE * 10)
    live = await processing(sessionmaker, redis, for_seconds=GRACE + 1, lease="1")
    claiming = await processing(sessionmaker, redis, for_seconds=GRACE + 1, lease=pipeline.CLAIMING)
    just_claimed = await processing(sessionmaker, redis, for_seconds=1)
    hung = await processing(sessionmaker, redis, for_seconds=DEADLINE + 1, lease="1")

    report, enqueued = await reap(sessionmaker, redis, broker, celery_list)

    assert (report.requeued, report.failed, enqueued) == ([hung], [], [hung])
    for analysis_id in (live, claiming, just_claimed):
        assert (await status_of(sessionmaker, analysis_id)).status == "processing"


async def test_once_redis_lost_every_lease_only_the_deadline_counts_for_the_grace(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    broker: BrokerQueue,
    celery_list: SyncRedis,
) -> None:
    """A Redis restart without persistence: no run has a lease, though the live ones take theirs
    back within seconds. Until Redis has kept the reaper's epoch for the grace, none is taken
    for lost; past the deadline, one still is."""
    await redis.delete(reaper.REDIS_EPOCH_KEY)
    running = await processing(sessionmaker, redis, for_seconds=GRACE + 1)
    stuck = await processing(sessionmaker, redis, for_seconds=DEADLINE + 1)

    report, _ = await reap(sessionmaker, redis, broker, celery_list)

    assert (report.requeued, report.failed) == ([stuck], [])
    assert (await status_of(sessionmaker, running)).status == "processing"
    assert await redis.get(reaper.REDIS_EPOCH_KEY) is not None  # the epoch starts now

    # The grace later its run has not taken its lease back: it is lost.
    await redis_kept_keys_for(redis, GRACE)
    report, _ = await reap(sessionmaker, redis, broker, celery_list)
    assert report.requeued == [running]


async def test_a_redis_outage_longer_than_a_lease_does_not_make_live_runs_look_lost(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    broker: BrokerQueue,
    celery_list: SyncRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis kept its keys (persistence, or only the network gone) but nobody reached it for
    longer than a lease lasts: the live runs' leases expired meanwhile, and they take them back
    only at their next renewal. The epoch must have lapsed with them, or the reaper's first pass
    takes every live run past the grace for a lost one. Short leases stand in for the real
    ones, so that the outage is a second."""
    monkeypatch.setattr(pipeline, "LEASE_SECONDS", 1.0)
    monkeypatch.setattr(pipeline, "LEASE_RENEW_SECONDS", 0.3)
    await redis_kept_keys_for(redis, GRACE * 10)
    live = await processing(sessionmaker, redis, for_seconds=GRACE + 1)
    # Renewed as the run does, just before the outage.
    await redis.set(pipeline.lease_key(live), "1", px=int(pipeline.LEASE_SECONDS * 1000))
    report, _ = await reap(sessionmaker, redis, broker, celery_list)
    assert report.requeued == []

    await asyncio.sleep(pipeline.LEASE_SECONDS + 0.2)  # neither the run nor a reaper gets through
    assert await redis.get(pipeline.lease_key(live)) is None

    report, _ = await reap(sessionmaker, redis, broker, celery_list)
    assert (report.requeued, report.failed) == ([], [])
    assert (await status_of(sessionmaker, live)).status == "processing"


async def test_a_live_runs_save_never_waits_for_the_reapers_redis(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis_url: str,
    redis: Redis,
    broker: BrokerQueue,
) -> None:
    """The reaper looks at the leases of runs past the grace, most of them alive. While Redis
    keeps it waiting (slow, or gone silent until the socket timeout), it must hold no lock on
    their rows: a run's save, its claim or its requeue would wait behind it."""
    await redis_kept_keys_for(redis, GRACE * 10)
    live = await processing(sessionmaker, redis, for_seconds=GRACE + 1, lease="1")
    url = urlsplit(redis_url)
    assert url.hostname is not None
    with silencing_proxy((url.hostname, url.port or 6379)) as (port, silence):
        silent = create_redis(
            urlunsplit(url._replace(netloc=f"127.0.0.1:{port}")), socket_timeout=3
        )
        await silent.ping()
        silence()
        passing = asyncio.create_task(
            reap_once(
                sessionmaker,
                silent,
                lambda _: None,
                broker=broker,
                deadline_seconds=DEADLINE,
                lease_grace_seconds=GRACE,
                requeue_unsent_after_seconds=UNSENT_AFTER,
                max_attempts=MAX_ATTEMPTS,
            )
        )
        try:
            await asyncio.sleep(0.5)  # the pass waits on Redis
            assert not passing.done()
            async with sessionmaker() as session, session.begin():
                await session.execute(text("SET LOCAL lock_timeout = '500ms'"))
                # The run's save (pipeline._save), as far as locks go.
                await session.execute(
                    update(Analysis)
                    .where(Analysis.id == live, Analysis.status == "processing")
                    .values(status="completed", progress=100)
                )
        finally:
            with pytest.raises(Exception):  # noqa: B017 (the socket timeout, whichever kind)
                await passing
            await silent.aclose()
    assert (await status_of(sessionmaker, live)).status == "completed"


async def test_what_the_reaper_publishes_after_redis_lost_the_progress_follows_the_lost_ids(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    broker: BrokerQueue,
    celery_list: SyncRedis,
) -> None:
    """The lost runs reported their stages, then Redis lost the analyses' hashes and logs (a
    restart without persistence): the re-queue and the failure the reaper publishes get ids
    above the ones watchers saw, as the next run and the failure stand after them."""
    long_ago = datetime.now(UTC) - timedelta(seconds=DEADLINE * 2)
    stuck = {"status": "processing", "stage": "load", "started_at": long_ago}
    retryable = await add(sessionmaker, age_seconds=DEADLINE * 2, attempts=1, **stuck)
    exhausted = await add(sessionmaker, age_seconds=DEADLINE * 2, attempts=MAX_ATTEMPTS, **stuck)
    seen: dict[uuid.UUID, int] = {}
    for analysis_id, attempt in ((retryable, 1), (exhausted, MAX_ATTEMPTS)):
        for stage, reached in [("load", 5), ("classify", 20), ("guide", 70)]:
            data = {"status": "processing", "stage": stage, "progress": reached}
            seen[analysis_id] = await progress.publish_event(
                redis, analysis_id, "progress", data, attempt=attempt
            )
        await redis.delete(progress.state_key(analysis_id), progress.events_key(analysis_id))

    report, _ = await reap(sessionmaker, redis, broker, celery_list)

    assert (report.requeued, report.failed) == ([retryable], [exhausted])
    (requeued,) = await progress.read_events(redis, retryable)
    (failed,) = await progress.read_events(redis, exhausted)
    assert (requeued.data["status"], failed.event) == ("queued", "failed")
    assert requeued.seq > seen[retryable] and failed.seq > seen[exhausted]


async def test_a_run_given_up_on_that_then_fails_the_analysis_still_ends_its_progress(
    deps: pipeline.PipelineDeps,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    broker: BrokerQueue,
    celery_list: SyncRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reaper re-queues an analysis whose run is still loading its photo (slow storage),
    handing the progress over to the next run; the run then finds the photo gone and fails the
    analysis, whose `attempts` are still its own. The database says failed: so must the hash,
    or every poll and stream shows `queued` for ever and an EventSource reconnects in a loop."""
    analysis_id = await add(sessionmaker, age_seconds=DEADLINE * 2, status="queued")
    load_image = pipeline._load_image

    async def given_up_on_while_loading(storage: Any, key: str) -> Any:
        async with sessionmaker() as session, session.begin():
            await session.execute(
                update(Analysis)
                .where(Analysis.id == analysis_id)
                .values(started_at=datetime.now(UTC) - timedelta(seconds=DEADLINE * 2))
            )
        report, _ = await reap(sessionmaker, redis, broker, celery_list)
        assert report.requeued == [analysis_id]
        return await load_image(storage, key)

    monkeypatch.setattr(pipeline, "_load_image", given_up_on_while_loading)
    assert await pipeline.run_analysis(deps, analysis_id) == "failed"

    row = await status_of(sessionmaker, analysis_id)
    assert (row.status, row.attempts, row.error) == ("failed", 1, pipeline.IMAGE_MISSING)
    assert (await progress.read_state(redis, analysis_id))["status"] == "failed"
    *_, handed_over, failed = await progress.read_events(redis, analysis_id)
    assert (handed_over.data["status"], failed.event) == ("queued", "failed")
    assert failed.seq > handed_over.seq


async def test_queued_analyses_without_a_message_are_enqueued_again_well_before_the_deadline(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    broker: BrokerQueue,
    celery_list: SyncRedis,
) -> None:
    # Committed, never sent (the API died before its enqueue), and waiting far less than the
    # deadline: the app should not wait five minutes for it.
    unsent = await add(sessionmaker, age_seconds=UNSENT_AFTER * 2, status="queued")
    recent = await add(sessionmaker, age_seconds=1, status="queued")
    assert UNSENT_AFTER * 2 < DEADLINE

    report, enqueued = await reap(sessionmaker, redis, broker, celery_list)

    assert report.reenqueued == enqueued == [unsent]
    assert recent not in enqueued
    assert (await status_of(sessionmaker, unsent)).status == "queued"
    _, enqueued_again = await reap(sessionmaker, redis, broker, celery_list)
    assert unsent not in enqueued_again


async def test_behind_a_backlog_only_analyses_short_of_a_message_are_enqueued_again(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    broker: BrokerQueue,
    celery_list: SyncRedis,
) -> None:
    # Two analyses waited past the period, and the queue holds two messages: a backlog, not
    # lost messages. Duplicates would only lengthen it.
    oldest = await add(sessionmaker, age_seconds=UNSENT_AFTER * 3, status="queued")
    older = await add(sessionmaker, age_seconds=UNSENT_AFTER * 2, status="queued")
    await redis.lpush(broker.waiting_key, "message", "message")

    report, enqueued = await reap(sessionmaker, redis, broker, celery_list)
    assert (report.reenqueued, enqueued) == ([], [])

    # One message is gone: one analysis, the longest waiting, is enqueued again.
    await redis.rpop(broker.waiting_key)
    report, enqueued = await reap(sessionmaker, redis, broker, celery_list)
    assert report.reenqueued == enqueued == [oldest]
    assert older not in enqueued


async def test_messages_live_workers_hold_count_as_sent_and_dead_ones_do_not(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    broker: BrokerQueue,
    celery_list: SyncRedis,
) -> None:
    # One analysis runs (its message held until acknowledged); one waits out a retry's
    # countdown, queued again, its message held by the worker, not in the list.
    await add(
        sessionmaker,
        age_seconds=UNSENT_AFTER * 3,
        status="processing",
        attempts=1,
        started_at=datetime.now(UTC),
    )
    retrying = await add(sessionmaker, age_seconds=UNSENT_AFTER * 2, status="queued", attempts=1)
    await hold(redis, broker, "running", age_seconds=1)
    await hold(redis, broker, "countdown", age_seconds=30)

    report, sent = await reap(sessionmaker, redis, broker, celery_list)
    assert (report.reenqueued, sent) == ([], [])

    # The retry's worker died with it: kombu keeps the hold until the visibility timeout (an
    # hour), but past the longest a live worker holds one it no longer counts.
    await redis.zadd(broker.held_index_key, {"countdown": time.time() - LIVE_HOLD - 1})
    report, sent = await reap(sessionmaker, redis, broker, celery_list)
    assert report.reenqueued == sent == [retrying]


async def test_analyses_requeued_in_the_same_pass_are_not_counted_short(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    broker: BrokerQueue,
    celery_list: SyncRedis,
) -> None:
    # A stuck analysis whose message is gone is re-queued and sent; an analysis waiting in a
    # backlog has its message. Neither needs another one.
    stuck = await add(
        sessionmaker,
        age_seconds=DEADLINE * 2,
        status="processing",
        attempts=1,
        started_at=datetime.now(UTC) - timedelta(seconds=DEADLINE * 2),
    )
    waiting = await add(sessionmaker, age_seconds=UNSENT_AFTER * 2, status="queued")
    await redis.lpush(broker.waiting_key, str(waiting))

    report, sent = await reap(sessionmaker, redis, broker, celery_list)
    assert (report.requeued, report.reenqueued, sent) == ([stuck], [], [stuck])


async def test_two_reapers_at_once_send_a_missing_message_once(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    broker: BrokerQueue,
    celery_list: SyncRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Three analyses waiting, two messages: one is short. Every worker runs a reaper. With more
    # waiting analyses than one pass takes, each reaper locks rows of its own (SKIP LOCKED) and
    # would send its own copy of the shortfall.
    monkeypatch.setattr(reaper, "BATCH_SIZE", 1)
    for age in (3, 4, 5):
        await add(sessionmaker, age_seconds=UNSENT_AFTER * age, status="queued")
    await redis.lpush(broker.waiting_key, "message", "message")

    passes = await asyncio.gather(
        *(reap(sessionmaker, redis, broker, celery_list) for _ in range(4))
    )
    assert sum(len(sent) for _, sent in passes) == 1


async def test_unread_uploads_go_once_past_their_age(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, upload_url="http://api/upload", signing_key=b"k" * 32)
    for key in ("incoming/u1/abandoned", "incoming/u2/in-flight", "images/u1/kept.jpg"):
        storage.put(key, b"photo", "image/jpeg")
    two_hours_ago = time.time() - 7200
    for key in ("incoming/u1/abandoned", "images/u1/kept.jpg"):
        os.utime(tmp_path / key, (two_hours_ago, two_hours_ago))

    assert await sweep_unread_uploads(storage, max_age_seconds=3600) == 1

    with pytest.raises(ObjectNotFound):
        storage.get("incoming/u1/abandoned")
    assert storage.get("incoming/u2/in-flight") == b"photo"
    assert storage.get("images/u1/kept.jpg") == b"photo"  # analyses' photos are not uploads


async def test_a_failed_enqueue_stops_neither_the_failures_final_event_nor_the_other_requeues(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    broker: BrokerQueue,
    celery_list: SyncRedis,
) -> None:
    """The broker is down while the reaper sends re-queues: the failures it committed still get
    their final event (nothing reaps them again), and each re-queue is left to be sent later."""
    stuck = {"status": "processing", "started_at": datetime.now(UTC) - timedelta(hours=1)}
    retry_first = await add(sessionmaker, age_seconds=3600, attempts=1, **stuck)
    retry_second = await add(sessionmaker, age_seconds=3600, attempts=2, **stuck)
    give_up = await add(sessionmaker, age_seconds=3600, attempts=MAX_ATTEMPTS, **stuck)
    for analysis_id, attempt in ((retry_first, 1), (retry_second, 2), (give_up, MAX_ATTEMPTS)):
        await progress.publish_event(
            redis,
            analysis_id,
            "progress",
            {"status": "processing", "stage": "classify", "progress": 20},
            attempt=attempt,
        )
    tried: list[uuid.UUID] = []

    def broker_down(analysis_id: uuid.UUID) -> None:
        tried.append(analysis_id)
        raise ConnectionError("Error 111 connecting to redis-broker:6379. Connection refused.")

    report = await reap_once(
        sessionmaker,
        redis,
        broker_down,
        broker=broker,
        deadline_seconds=DEADLINE,
        lease_grace_seconds=GRACE,
        requeue_unsent_after_seconds=UNSENT_AFTER,
        max_attempts=MAX_ATTEMPTS,
    )

    assert report.failed == [give_up]
    state = await progress.read_state(redis, give_up)
    assert (state["status"], state["stage"]) == ("failed", "classify")
    assert sorted(tried) == sorted([retry_first, retry_second])  # one error did not stop both
    # Unsent, they wait `queued` without a message; past the period they are sent again.
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(Analysis)
            .where(Analysis.id.in_(tried))
            .values(updated_at=datetime.now(UTC) - timedelta(seconds=UNSENT_AFTER * 2))
        )
    report, enqueued = await reap(sessionmaker, redis, broker, celery_list)
    assert sorted(enqueued) == sorted(tried)


async def test_a_database_gone_silent_stops_the_reaper_only_until_it_answers(
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    broker: BrokerQueue,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL offers no client-side timeout: a pass on a connection gone silent is given
    up after BACKGROUND_ROUND_SECONDS, and the next one reaps, instead of the reaper waiting
    for good with every stuck analysis."""
    monkeypatch.setattr(aio, "BACKGROUND_ROUND_SECONDS", 0.5)
    url = urlsplit(database_url)
    assert url.hostname is not None
    with silencing_proxy((url.hostname, url.port or 5432)) as (port, silence):
        user = f"{url.username}@" if url.username else ""
        engine = create_engine(urlunsplit(url._replace(netloc=f"{user}127.0.0.1:{port}")))
        async with engine.connect() as connection:  # one connection in the reaper's pool
            await connection.execute(text("SELECT 1"))
        old = datetime.now(UTC) - timedelta(hours=1)
        stuck = await add(
            sessionmaker, age_seconds=3600, status="processing", started_at=old, attempts=1
        )
        storage = LocalStorage(tmp_path, upload_url="http://api/upload", signing_key=b"k" * 32)
        silence()  # the connection the reaper's first pass takes
        stop = asyncio.Event()
        running = asyncio.create_task(
            reaper.run_reaper(
                create_sessionmaker(engine),
                redis,
                lambda _: None,
                broker=broker,
                deadline_seconds=DEADLINE,
                lease_grace_seconds=GRACE,
                requeue_unsent_after_seconds=UNSENT_AFTER,
                max_attempts=1,
                interval_seconds=0.2,
                stop=stop,
                storage=storage,
                unread_upload_max_age_seconds=3600,
            )
        )
        for _ in range(150):
            if (await status_of(sessionmaker, stuck)).status == "failed":
                break
            await asyncio.sleep(0.2)
        stop.set()
        await asyncio.wait_for(running, 30)
        await engine.dispose()
    assert (await status_of(sessionmaker, stuck)).status == "failed"
