"""kill -9 in the middle of a task, with real Celery workers, Redis and PostgreSQL.

The task is held mid-stage by the OpenAI stand-in, which keeps the first classification
request waiting: the worker is then in `classify`, exactly where a crash hurts.

The first kill -9 test proves Celery's own redelivery (queue.py: acks_late,
reject_on_worker_lost, prefetch 1), so the reaper must not be able to help: its deadline and its
lease grace are far longer than any wait there. When a whole worker dies, the reaper comes
first in production, once the run's lease has expired (the visibility timeout is an hour): the
second kill -9 test, with a short grace and the same long deadline."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection
from redis.asyncio import Redis

from ecosort_waste import pipeline, progress, worker
from ecosort_waste.config import Settings
from ecosort_waste.queue import QUEUE, UNACKED_KEY
from ecosort_waste.storage import storage_from_settings

from .conftest import FakeThirdParties, photo_bytes, running_third_parties
from .test_worker import environment
from .workers import (
    WorkerProcess,
    analysis_row,
    insert_analysis,
    outbox_events,
    start_worker,
    wait_for,
)

DEADLINE_SECONDS = 120
# A redelivery takes seconds (a new pool process loads the model first); failing here means
# Celery did not redeliver, as the reaper waits for DEADLINE_SECONDS.
REDELIVERY_WAIT_SECONDS = 30
# The shortest the worker accepts: more than the run's lease.
LEASE_GRACE_SECONDS = pipeline.LEASE_SECONDS + 2


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeThirdParties]:
    with running_third_parties() as fake:
        yield fake


@pytest.fixture
def settings(
    database_url: str,
    redis_url: str,
    fake: FakeThirdParties,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        celery_key_prefix=f"test-{uuid.uuid4().hex[:8]}:",  # each test its own queue
        data_dir=str(tmp_path_factory.mktemp("waste-data")),
        recycling_url=fake.url,
        classifier_provider="openai",
        openai_api_key="sk-test",
        openai_base_url=f"{fake.url}/v1",
        openai_max_retries=0,
        analysis_deadline_seconds=DEADLINE_SECONDS,
        analysis_lease_grace_seconds=DEADLINE_SECONDS,
        requeue_unsent_after_seconds=DEADLINE_SECONDS,
        analysis_max_attempts=3,
        reaper_interval_seconds=0.3,
        guidance_cache_seconds=0,
        log_json=False,
    )
    monkeypatch.setattr(worker, "app", worker.create_celery_app(settings))
    return settings


def queue_analysis(settings: Settings) -> uuid.UUID:
    data = photo_bytes()
    key = f"analyses/{uuid.uuid4()}.jpg"
    storage_from_settings(settings).put(key, data, "image/jpeg")
    analysis_id = insert_analysis(settings.database_url, key, data)
    worker.enqueue_analysis(analysis_id)
    return analysis_id


def queue_held_analysis(settings: Settings, fake: FakeThirdParties) -> uuid.UUID:
    fake.hang_openai.set()
    fake.release.clear()
    return queue_analysis(settings)


def wait_until_classifying(
    settings: Settings, fake: FakeThirdParties, analysis_id: uuid.UUID, sent_before: int
) -> Any:
    row = wait_for(settings.database_url, analysis_id, status="processing")
    deadline = time.monotonic() + 30
    while len(fake.chat_requests()) == sent_before:  # the request is in flight, held
        assert time.monotonic() < deadline, "the worker never called the provider"
        time.sleep(0.02)
    return row


def let_provider_answer(fake: FakeThirdParties) -> None:
    fake.hang_openai.clear()  # later calls answer at once
    fake.release.set()  # and the held one is let go (its client is dead)


async def broker_messages(redis: Redis, settings: Settings) -> dict[str, list[str]]:
    """The raw messages of the queue: waiting in its list, and taken by a worker but not yet
    acknowledged (kombu's `unacked` hash). A message names its analysis in its headers."""
    prefix = settings.celery_key_prefix
    waiting = await redis.lrange(f"{prefix}{QUEUE}", 0, -1)
    unacked = await redis.hvals(f"{prefix}{UNACKED_KEY}")
    return {"waiting": [_text(m) for m in waiting], "unacked": [_text(m) for m in unacked]}


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def restore_unacknowledged(settings: Settings) -> None:
    """What any worker's consumer does when it starts and then every ~100 s: put back the
    messages left unacknowledged past the visibility timeout (kombu's Redis transport). Here
    with a timeout of 0 instead of waiting CELERY_VISIBILITY_TIMEOUT_SECONDS (an hour): no
    worker is alive, so the only unacknowledged message is the dead worker's."""
    options = {"visibility_timeout": 0, "global_keyprefix": settings.celery_key_prefix}
    with Connection(settings.redis_url, transport_options=options) as connection:
        connection.default_channel.qos.restore_visible(num=100)


async def published_statuses(redis: Redis, analysis_id: uuid.UUID) -> list[str | None]:
    return [e.data.get("status") for e in await progress.read_events(redis, analysis_id)]


def assert_not_reaped(process: WorkerProcess, published: list[str | None]) -> None:
    # The reaper would have published `queued` and logged `reaper.reaped`.
    assert "queued" not in published, published
    assert "reaper.reaped" not in process.log()


async def test_kill_9_mid_task_is_redelivered_by_celery(
    settings: Settings, fake: FakeThirdParties, redis: Redis, tmp_path_factory: Any
) -> None:
    """Two crashes, one test (a worker start costs seconds): first a pool process of the
    worker, then the whole worker, each killed while its task waits in `classify`."""
    logs = tmp_path_factory.mktemp("logs")
    first = start_worker(environment(settings), "crash-1", logs)
    try:
        # 1. The pool process dies: the worker's main process sees WorkerLostError and, with
        # acks_late + reject_on_worker_lost, puts the message straight back in the queue for
        # the pool process it forks next. Without either setting the message is acknowledged
        # (when taken, or as failed) and the analysis stays `processing` until the deadline.
        sent = len(fake.chat_requests())
        analysis_id = queue_held_analysis(settings, fake)
        row = await asyncio.to_thread(wait_until_classifying, settings, fake, analysis_id, sent)
        assert (row["status"], row["attempts"]) == ("processing", 1)
        assert (await progress.read_state(redis, analysis_id))["stage"] == "classify"
        (child,) = first.pool_children()

        let_provider_answer(fake)
        os.kill(child, signal.SIGKILL)

        row = await asyncio.to_thread(
            wait_for,
            settings.database_url,
            analysis_id,
            timeout=REDELIVERY_WAIT_SECONDS,
            status="completed",
        )
        children = first.pool_children()
        assert children and child not in children  # rerun by the pool process forked anew
        # The killed run and the rerun, nothing else.
        assert row["attempts"] == 2 and row["result"]["provider"] == "openai"
        assert len(outbox_events(settings.database_url, analysis_id)) == 1
        assert "WorkerLostError" in first.log()
        published = await published_statuses(redis, analysis_id)
        assert published[0] == "processing" and published[-1] == "completed"
        assert_not_reaped(first, published)

        # 2. The whole worker dies (main process and pool, kill -9 on its group): nobody is
        # left to reject the message. With acks_late it stays in Redis, unacknowledged, until
        # the visibility timeout makes the transport redeliver it; without, it was
        # acknowledged when taken and is gone. With prefetch 1 the busy worker has not taken
        # the next message either: that one is still in the queue for the other workers.
        sent = len(fake.chat_requests())
        held = queue_held_analysis(settings, fake)
        await asyncio.to_thread(wait_until_classifying, settings, fake, held, sent)
        behind = queue_analysis(settings)
        await asyncio.sleep(0.5)  # time enough for a worker that prefetches to take it
        messages = await broker_messages(redis, settings)
    finally:
        first.kill_all()
    let_provider_answer(fake)
    assert [str(held) in m for m in messages["unacked"]] == [True], messages
    assert [str(behind) in m for m in messages["waiting"]] == [True], messages

    restore_unacknowledged(settings)
    assert len((await broker_messages(redis, settings))["waiting"]) == 2
    second = start_worker(environment(settings), "crash-2", logs)
    try:
        rows = [
            await asyncio.to_thread(
                wait_for,
                settings.database_url,
                analysis_id,
                timeout=REDELIVERY_WAIT_SECONDS,
                status="completed",
            )
            for analysis_id in (held, behind)
        ]
    finally:
        second.stop()
    assert [row["attempts"] for row in rows] == [2, 1]
    assert rows[0]["result"]["category"] == "can"
    assert len(outbox_events(settings.database_url, held)) == 1
    published = await published_statuses(redis, held)
    # processing (first worker, killed) → processing → completed (second worker)
    assert published[0] == "processing" and published[-1] == "completed"
    assert_not_reaped(second, published)


async def test_kill_9_of_a_whole_worker_is_requeued_by_the_reaper_once_the_lease_expires(
    settings: Settings, fake: FakeThirdParties, redis: Redis, tmp_path_factory: Any
) -> None:
    """A whole worker dies mid-task (its pod OOM-killed): its message stays unacknowledged for
    the visibility timeout (an hour), and the deadline is minutes away. Another worker's reaper
    re-queues the analysis once the dead run's lease has expired. While the run lived, past the
    grace, its renewed lease kept the reapers off."""
    env = environment(settings) | {"ANALYSIS_LEASE_GRACE_SECONDS": str(LEASE_GRACE_SECONDS)}
    logs = tmp_path_factory.mktemp("logs")
    doomed = start_worker(env, "lease-1", logs)
    try:
        sent = len(fake.chat_requests())
        analysis_id = queue_held_analysis(settings, fake)
        await asyncio.to_thread(wait_until_classifying, settings, fake, analysis_id, sent)
        claimed = time.monotonic()
        survivor = start_worker(env, "lease-2", logs)
        try:
            # Both reapers look every 0.3 s, past the grace: the live run is left alone.
            await asyncio.sleep(max(0.0, claimed + LEASE_GRACE_SECONDS + 2 - time.monotonic()))
            row = await asyncio.to_thread(analysis_row, settings.database_url, analysis_id)
            assert (row["status"], row["attempts"]) == ("processing", 1)
            assert await redis.get(pipeline.lease_key(analysis_id)) == "1"
            for process in (doomed, survivor):
                assert_not_reaped(process, await published_statuses(redis, analysis_id))

            doomed.kill_all()
            let_provider_answer(fake)
            # The lease expires, then a reaper's pass: seconds, not the deadline's minutes.
            row = await asyncio.to_thread(
                wait_for,
                settings.database_url,
                analysis_id,
                timeout=pipeline.LEASE_SECONDS + REDELIVERY_WAIT_SECONDS,
                status="completed",
            )
        finally:
            survivor.stop()
    finally:
        doomed.kill_all()
    assert pipeline.LEASE_SECONDS + REDELIVERY_WAIT_SECONDS < DEADLINE_SECONDS / 2
    assert row["attempts"] == 2 and row["result"]["provider"] == "openai"
    assert len(outbox_events(settings.database_url, analysis_id)) == 1
    assert "holds no lease" in survivor.log()
    published = await published_statuses(redis, analysis_id)
    assert "queued" in published and published[-1] == "completed"


async def test_provider_errors_are_retried_with_backoff_then_fail_with_the_reason(
    settings: Settings, fake: FakeThirdParties, redis: Redis, tmp_path_factory: Any
) -> None:
    """OpenAI answers 503 and the local fallback cannot load its head: every attempt is a
    provider error, retried by Celery after a backoff until the attempts are spent."""
    heads = tmp_path_factory.mktemp("lost-head")
    (heads / "current").write_text("head-v1.npz\n")  # a pointer to a head that is not there
    env = environment(settings) | {
        "ANALYSIS_MAX_ATTEMPTS": "2",
        "CLASSIFIER_HEADS_DIR": str(heads),
    }
    fake.openai_responses = [(503, {"error": {"message": "overloaded", "type": "server"}})]
    data = photo_bytes()
    key = f"analyses/{uuid.uuid4()}.jpg"
    storage_from_settings(settings).put(key, data, "image/jpeg")
    analysis_id = insert_analysis(settings.database_url, key, data)
    failing = start_worker(env, "crash-3", tmp_path_factory.mktemp("logs"))
    try:
        worker.enqueue_analysis(analysis_id)
        row = await asyncio.to_thread(
            wait_for, settings.database_url, analysis_id, timeout=60, status="failed"
        )
    finally:
        failing.stop()
        fake.openai_responses = []
    assert row["attempts"] == 2
    assert row["error"] == pipeline.CLASSIFIER_UNAVAILABLE  # user-safe; the detail is logged
    log = failing.log()
    assert "Retry in" in log  # Celery's own record of the delayed retry
    assert "openai" in log and "fallback local" in log
    statuses = [e.data.get("status") for e in await progress.read_events(redis, analysis_id)]
    assert statuses.count("processing") >= 2 and "queued" in statuses
    assert statuses[-1] == "failed"
