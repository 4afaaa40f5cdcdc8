"""kill -9 in the middle of a task, with real Celery workers, Redis and PostgreSQL.

The task is held mid-stage by the OpenAI stand-in, which keeps the first classification
request waiting: the worker is then in `classify`, exactly where a crash hurts."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from ecosort_waste import progress, worker
from ecosort_waste.config import Settings
from ecosort_waste.storage import storage_from_settings

from .conftest import FakeThirdParties, photo_bytes, running_third_parties
from .test_worker import environment
from .workers import insert_analysis, outbox_events, start_worker, wait_for

DEADLINE_SECONDS = 3


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
        analysis_max_attempts=3,
        reaper_interval_seconds=0.3,
        guidance_cache_seconds=0,
        log_json=False,
    )
    monkeypatch.setattr(worker, "app", worker.create_celery_app(settings))
    return settings


def queue_held_analysis(settings: Settings, fake: FakeThirdParties) -> uuid.UUID:
    data = photo_bytes()
    key = f"analyses/{uuid.uuid4()}.jpg"
    storage_from_settings(settings).put(key, data, "image/jpeg")
    analysis_id = insert_analysis(settings.database_url, key, data)
    fake.hang_openai.set()
    fake.release.clear()
    worker.enqueue_analysis(analysis_id)
    return analysis_id


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


async def test_kill_9_mid_task_never_loses_the_analysis(
    settings: Settings, fake: FakeThirdParties, redis: Redis, tmp_path_factory: Any
) -> None:
    """Two crashes, one test (a worker start costs seconds): first a pool process of the
    worker, then the whole worker, each killed while its task waits in `classify`."""
    logs = tmp_path_factory.mktemp("logs")
    first = start_worker(environment(settings), "crash-1", logs)
    try:
        # 1. The pool process dies: the worker's main process sees WorkerLostError and, with
        # task_reject_on_worker_lost + acks_late, puts the message back for a new pool process.
        sent = len(fake.chat_requests())
        analysis_id = queue_held_analysis(settings, fake)
        row = await asyncio.to_thread(wait_until_classifying, settings, fake, analysis_id, sent)
        assert (row["status"], row["attempts"]) == ("processing", 1)
        assert (await progress.read_state(redis, analysis_id))["stage"] == "classify"
        (child,) = first.pool_children()

        let_provider_answer(fake)
        os.kill(child, signal.SIGKILL)

        row = await asyncio.to_thread(
            wait_for, settings.database_url, analysis_id, timeout=60, status="completed"
        )
        # 2: the killed run and the rerun (3 if the reaper also fired on a very busy machine).
        assert row["attempts"] >= 2 and row["result"]["provider"] == "openai"
        assert child not in first.pool_children()
        assert len(outbox_events(settings.database_url, analysis_id)) == 1
        assert "WorkerLostError" in first.log()

        # 2. The whole worker dies (main process, pool and its reaper, kill -9 on its group).
        sent = len(fake.chat_requests())
        analysis_id = queue_held_analysis(settings, fake)
        await asyncio.to_thread(wait_until_classifying, settings, fake, analysis_id, sent)
    finally:
        first.kill_all()
    let_provider_answer(fake)
    second = start_worker(environment(settings), "crash-2", logs)
    try:
        # Its message is stranded in the dead worker's unacknowledged set (redelivered only
        # after the visibility timeout, an hour); the second worker's reaper re-queues it after
        # the deadline, and the second worker runs it.
        row = await asyncio.to_thread(
            wait_for, settings.database_url, analysis_id, timeout=60, status="completed"
        )
    finally:
        second.stop()
    assert row["attempts"] >= 2 and row["result"]["category"] == "can"
    assert len(outbox_events(settings.database_url, analysis_id)) == 1
    statuses = [e.data.get("status") for e in await progress.read_events(redis, analysis_id)]
    # processing (first worker) → queued (the reaper) → processing → completed (second worker)
    assert statuses[0] == "processing" and "queued" in statuses and statuses[-1] == "completed"


async def test_provider_errors_are_retried_with_backoff_then_fail_with_the_reason(
    settings: Settings, fake: FakeThirdParties, redis: Redis, tmp_path_factory: Any
) -> None:
    """OpenAI answers 503 and the local fallback cannot load its head: every attempt is a
    provider error, retried by Celery after a backoff until the attempts are spent."""
    env = environment(settings) | {
        "ANALYSIS_MAX_ATTEMPTS": "2",
        "CLASSIFIER_HEADS_DIR": str(tmp_path_factory.mktemp("no-heads")),
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
    assert row["error"].startswith("classification failed")
    assert "Retry in" in failing.log()  # Celery's own record of the delayed retry
    assert "openai" in row["error"] and "fallback local" in row["error"]
    statuses = [e.data.get("status") for e in await progress.read_events(redis, analysis_id)]
    assert statuses.count("processing") >= 2 and "queued" in statuses
    assert statuses[-1] == "failed"
