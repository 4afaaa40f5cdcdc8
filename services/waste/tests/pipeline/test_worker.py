"""A real Celery worker process (`celery -A ecosort_waste.worker worker -Q analyses`) against
real Redis and PostgreSQL, with the local model: normal runs, recycling down, duplicate
deliveries, and the worker's reaper turning a stuck analysis into `failed`."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from redis.asyncio import Redis

from ecosort_waste import pipeline, progress, reaper, worker
from ecosort_waste.config import Settings, get_settings
from ecosort_waste.queue import TASK_NAME
from ecosort_waste.storage import storage_from_settings

from .conftest import FakeThirdParties, photo_bytes, running_third_parties
from .workers import (
    WorkerProcess,
    analysis_row,
    insert_analysis,
    outbox_events,
    start_worker,
    wait_for,
)

DEADLINE_SECONDS = 10
UNSENT_AFTER_SECONDS = 1.0
MAX_ATTEMPTS = 3


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeThirdParties]:
    with running_third_parties() as fake:
        yield fake


@pytest.fixture(scope="module")
def worker_settings(
    database_url: str,
    redis_url: str,
    fake: FakeThirdParties,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        celery_key_prefix=f"test-{uuid.uuid4().hex[:8]}:",
        data_dir=str(tmp_path_factory.mktemp("waste-data")),
        recycling_url=fake.url,
        classifier_provider="local",
        analysis_deadline_seconds=DEADLINE_SECONDS,
        analysis_max_attempts=MAX_ATTEMPTS,
        reaper_interval_seconds=0.3,
        requeue_unsent_after_seconds=UNSENT_AFTER_SECONDS,
        guidance_cache_seconds=0,
        guidance_down_cooldown_seconds=0,
        log_json=False,
        worker_heartbeat_file=str(tmp_path_factory.mktemp("heartbeat") / "worker-heartbeat"),
    )


def environment(settings: Settings) -> dict[str, str]:
    names = (
        "database_url",
        "redis_url",
        "celery_key_prefix",
        "data_dir",
        "recycling_url",
        "classifier_provider",
        "analysis_deadline_seconds",
        "analysis_lease_grace_seconds",
        "analysis_max_attempts",
        "reaper_interval_seconds",
        "requeue_unsent_after_seconds",
        "guidance_cache_seconds",
        "guidance_down_cooldown_seconds",
        "openai_api_key",
        "openai_base_url",
        "openai_max_retries",
        "log_json",
        "worker_heartbeat_file",
    )
    values = {name: getattr(settings, name) for name in names}
    return {name.upper(): str(value) for name, value in values.items() if value is not None}


@pytest.fixture(scope="module")
def running_worker(
    worker_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    process = start_worker(environment(worker_settings), "waste-a", tmp_path_factory.mktemp("logs"))
    yield process
    process.stop()


@pytest.fixture
def enqueue(worker_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """`worker.enqueue_analysis` (what the API calls) sending to this test's broker prefix."""
    monkeypatch.setattr(worker, "app", worker.create_celery_app(worker_settings))


def stored_photo(settings: Settings, name: str = "metal/metal1.jpg") -> tuple[str, bytes]:
    data = photo_bytes(name)
    key = f"analyses/{uuid.uuid4()}.jpg"
    storage_from_settings(settings).put(key, data, "image/jpeg")
    return key, data


@pytest.mark.usefixtures("running_worker", "enqueue")
async def test_a_queued_analysis_completes_with_the_local_model(
    worker_settings: Settings, redis: Redis
) -> None:
    key, data = stored_photo(worker_settings)
    analysis_id = insert_analysis(worker_settings.database_url, key, data)

    worker.enqueue_analysis(analysis_id)

    row = await asyncio.to_thread(
        wait_for, worker_settings.database_url, analysis_id, status="completed"
    )
    result = row["result"]
    assert row["attempts"] == 1 and row["error"] is None
    assert result["provider"] == "local"
    assert result["model_version"].startswith("efficientnet-lite0") and result["head_version"]
    # A TrashNet metal photo the shipped model is sure of (0.89): the result is the model's
    # answer, with the guidance recycling gave for it.
    assert (result["category"], result["not_sure"]) == ("can", False)
    assert result["guidance_available"] is True and result["guidance"]["code"] == "can"
    (event,) = outbox_events(worker_settings.database_url, analysis_id)
    assert event["event_type"] == "analysis.completed"
    assert event["payload"]["user_id"] == str(row["owner_id"])
    events = await progress.read_events(redis, analysis_id)
    assert [e.event for e in events][-1] == "completed"
    assert [e.data["stage"] for e in events[:-1]] == ["load", "classify", "guide", "save"]


@pytest.mark.usefixtures("enqueue")
async def test_the_run_names_the_request_that_sent_it(
    worker_settings: Settings, fake: FakeThirdParties, running_worker: WorkerProcess
) -> None:
    """The API's request id goes with the message: on the worker's log lines and on its call to
    recycling, so one request's lines can be found in every service's log."""
    key, data = stored_photo(worker_settings, "glass/glass1.jpg")
    analysis_id = insert_analysis(worker_settings.database_url, key, data)
    request_id = f"rid-{uuid.uuid4().hex}"

    with structlog.contextvars.bound_contextvars(request_id=request_id):
        worker.enqueue_analysis(analysis_id)

    row = await asyncio.to_thread(
        wait_for, worker_settings.database_url, analysis_id, status="completed"
    )
    assert row["result"]["category"] is not None or row["result"]["not_sure"]
    lines = [line for line in running_worker.log().splitlines() if str(analysis_id) in line]
    assert any(request_id in line for line in lines), lines
    asked = [r for r in fake.requests if r.path.startswith("/api/v1/recycling/categories/")]
    sent = [{k.lower(): v for k, v in r.headers.items()}.get("x-request-id") for r in asked]
    assert request_id in sent or row["result"]["not_sure"]


@pytest.mark.usefixtures("running_worker", "enqueue")
async def test_recycling_down_completes_with_guidance_unavailable(
    worker_settings: Settings, fake: FakeThirdParties
) -> None:
    key, data = stored_photo(worker_settings, "glass/glass1.jpg")
    analysis_id = insert_analysis(worker_settings.database_url, key, data)
    fake.recycling_down = True
    try:
        worker.enqueue_analysis(analysis_id)
        row = await asyncio.to_thread(
            wait_for, worker_settings.database_url, analysis_id, status="completed"
        )
    finally:
        fake.recycling_down = False
    result = row["result"]
    assert result["guidance"] is None and result["guidance_available"] is False
    # The shipped model is sure of this glass photo (0.98): guidance was asked for, and missed.
    assert (result["category"], result["not_sure"]) == ("glass_bottle", False)
    asked = [r.path for r in fake.requests if r.path.startswith("/api/v1/recycling/categories/")]
    assert "/api/v1/recycling/categories/glass_bottle" in asked


@pytest.mark.usefixtures("running_worker", "enqueue")
async def test_duplicate_deliveries_process_an_analysis_once(worker_settings: Settings) -> None:
    key, data = stored_photo(worker_settings, "paper/paper1.jpg")
    analysis_id = insert_analysis(worker_settings.database_url, key, data)

    for _ in range(3):
        worker.enqueue_analysis(analysis_id)

    await asyncio.to_thread(wait_for, worker_settings.database_url, analysis_id, status="completed")
    await asyncio.sleep(0.5)  # let the duplicates run
    assert analysis_row(worker_settings.database_url, analysis_id)["attempts"] == 1
    assert len(outbox_events(worker_settings.database_url, analysis_id)) == 1


@pytest.mark.usefixtures("running_worker", "enqueue")
async def test_the_workers_reaper_fails_or_requeues_stuck_analyses(
    worker_settings: Settings, redis: Redis
) -> None:
    key, data = stored_photo(worker_settings)
    long_ago = datetime.now(UTC) - timedelta(seconds=DEADLINE_SECONDS * 3)
    # Stuck with no task anywhere (its worker vanished together with the message).
    exhausted = insert_analysis(
        worker_settings.database_url,
        key,
        data,
        status="processing",
        stage="classify",
        attempts=MAX_ATTEMPTS,
        started_at=long_ago,
    )
    retryable = insert_analysis(
        worker_settings.database_url,
        key,
        data,
        status="processing",
        stage="load",
        attempts=1,
        started_at=long_ago,
    )

    failed = await asyncio.to_thread(
        wait_for, worker_settings.database_url, exhausted, timeout=10, status="failed"
    )
    completed = await asyncio.to_thread(
        wait_for, worker_settings.database_url, retryable, timeout=15, status="completed"
    )

    assert (failed["error"], failed["stage"]) == (reaper.DID_NOT_FINISH, "classify")
    assert completed["attempts"] == 2 and completed["result"]["provider"] == "local"
    assert (await progress.read_events(redis, exhausted))[-1].event == "failed"


@pytest.mark.usefixtures("running_worker", "enqueue")
async def test_an_analysis_committed_but_never_sent_is_sent_by_the_reaper(
    worker_settings: Settings,
) -> None:
    # The API died between its commit and its enqueue. The worker's reaper sends it once the
    # broker has held no message for it for UNSENT_AFTER_SECONDS, long before the deadline.
    settings = worker_settings
    key, data = stored_photo(settings)
    analysis_id = insert_analysis(settings.database_url, key, data)

    row = await asyncio.to_thread(
        wait_for,
        settings.database_url,
        analysis_id,
        timeout=DEADLINE_SECONDS / 2,
        status="completed",
    )
    assert row["attempts"] == 1 and row["error"] is None


def test_the_celery_app_is_set_for_redelivery() -> None:
    """The app `celery -A ecosort_waste.worker` runs, as the worker's requests read it: a task
    is acknowledged only once it ran, and put back when its process dies; a process reserves
    no message beyond the one it runs; and Redis redelivers an unacknowledged message only
    after a task has certainly ended (its hard time limit), not while it may still run.
    test_worker_crash.py shows what each buys with real workers."""
    task = worker.app.tasks[TASK_NAME]
    assert task.acks_late is True
    assert task.reject_on_worker_lost is True
    conf = worker.app.conf
    assert conf.worker_prefetch_multiplier == 1
    visibility = conf.broker_transport_options["visibility_timeout"]
    assert visibility > conf.task_time_limit > get_settings().analysis_deadline_seconds


@pytest.mark.parametrize("analysis_id", ["not-a-uuid", 42, None])
def test_a_message_naming_no_possible_analysis_is_dropped_at_once(analysis_id: object) -> None:
    result = worker.app.tasks[TASK_NAME].apply(args=[analysis_id])
    assert result.get() == "skipped"
    assert result.info == "skipped" and result.state == "SUCCESS"  # no retry scheduled


def test_the_visibility_timeout_must_exceed_the_tasks_time_limit(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="VISIBILITY"):
        worker.create_celery_app(
            Settings(analysis_deadline_seconds=300, celery_visibility_timeout_seconds=600)
        )


def test_the_lease_grace_must_exceed_the_lease() -> None:
    with pytest.raises(ValueError, match="ANALYSIS_LEASE_GRACE_SECONDS"):
        worker.create_celery_app(Settings(analysis_lease_grace_seconds=pipeline.LEASE_SECONDS))


def test_the_reapers_passes_must_come_before_its_epoch_lapses() -> None:
    # Each pass renews the epoch's expiry; passes further apart would never count a lease.
    with pytest.raises(ValueError, match="REAPER_INTERVAL_SECONDS"):
        worker.create_celery_app(Settings(reaper_interval_seconds=reaper.epoch_lapse_seconds()))
    worker.create_celery_app(Settings())


def test_the_consumer_touches_its_heartbeat_file(
    running_worker: WorkerProcess, worker_settings: Settings
) -> None:
    """The liveness contract of the worker pods (docs/deploy.md): the file exists once the
    consumer runs, and its age stays below the probe's limit."""
    assert worker_settings.worker_heartbeat_file is not None
    heartbeat = Path(worker_settings.worker_heartbeat_file)
    deadline = datetime.now(UTC) + timedelta(seconds=30)
    while not heartbeat.exists() and datetime.now(UTC) < deadline:
        time.sleep(0.2)
    assert heartbeat.exists(), running_worker.log()
    age = time.time() - heartbeat.stat().st_mtime
    assert age < worker.HEARTBEAT_INTERVAL_SECONDS + 5
