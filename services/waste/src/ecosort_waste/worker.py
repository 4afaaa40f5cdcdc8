"""The Celery app and task of the waste pipeline.

Run: `celery -A ecosort_waste.worker worker -Q analyses`.

Delivery guarantees: the Celery settings, and why, are in queue.py; here
- provider errors are retried with exponential backoff (the pipeline counts attempts in the
  database, so a retry, a redelivery and a reaper re-queue all share one budget).
- the task is idempotent by analysis id (see pipeline.py).

Each worker process keeps one event loop and its own database pool, Redis client, HTTP client
and model for all its tasks; the pipeline is async code run on that loop.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import random
import threading
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog
from celery import Celery, Task, bootsteps, signals
from redis.asyncio import Redis

from ecosort_common.db import create_engine, create_sessionmaker
from ecosort_common.logging import configure_logging
from ecosort_common.redis import create_background_redis
from ecosort_waste import pipeline, reaper
from ecosort_waste.classifier.registry import registry_from_settings
from ecosort_waste.config import Settings, get_settings
from ecosort_waste.guidance import create_guidance_client
from ecosort_waste.queue import (
    QUEUE,
    REQUEST_ID_HEADER,
    TASK_NAME,
    UNACKED_INDEX_KEY,
    configure_celery,
    send_analysis,
)
from ecosort_waste.storage import storage_from_settings

log = structlog.get_logger(__name__)

# Retries of transient errors (the database, Redis or every classifier unreachable).
MAX_TASK_RETRIES = 8
MAX_BACKOFF_SECONDS = 60.0
HEARTBEAT_INTERVAL_SECONDS = 10.0

T = TypeVar("T")


def create_celery_app(settings: Settings) -> Celery:
    """The queue's Celery app (queue.py) with the worker's own consumer step."""
    if settings.analysis_lease_grace_seconds <= pipeline.LEASE_SECONDS:
        raise ValueError(
            f"ANALYSIS_LEASE_GRACE_SECONDS must exceed a run's lease ({pipeline.LEASE_SECONDS:g} "
            "s), or the reaper takes a run that has claimed its analysis but not yet written its "
            "lease for a lost one"
        )
    if settings.reaper_interval_seconds >= reaper.epoch_lapse_seconds():
        raise ValueError(
            f"REAPER_INTERVAL_SECONDS must be under {reaper.epoch_lapse_seconds():g} s, or the "
            "reaper's epoch lapses between its passes and a lost run waits for the deadline"
        )
    celery = configure_celery(settings)
    celery.steps["consumer"].add(HeartbeatFile)
    return celery


class HeartbeatFile(bootsteps.StartStopStep):
    """Touches WORKER_HEARTBEAT_FILE from the consumer's own timer: if the consumer hangs, the
    file goes stale and the liveness probe restarts the pod."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.path = get_settings().worker_heartbeat_file
        self.timer: Any = None

    def start(self, parent: Any) -> None:
        if self.path:
            self.beat()
            self.timer = parent.timer.call_repeatedly(HEARTBEAT_INTERVAL_SECONDS, self.beat)

    def stop(self, parent: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def beat(self) -> None:
        assert self.path is not None
        Path(self.path).touch()


@signals.worker_init.connect
def _forget_previous_heartbeat(**_: Any) -> None:
    """/tmp is an emptyDir that outlives a container restart: the previous container's last
    heartbeat would pass this one's startup probe before its consumer runs."""
    path = get_settings().worker_heartbeat_file
    if path:
        Path(path).unlink(missing_ok=True)


app = create_celery_app(get_settings())


def enqueue_analysis(analysis_id: uuid.UUID) -> None:
    """Queue an analysis with this process's app (the reaper's re-queue)."""
    send_analysis(app, analysis_id)


@dataclass
class WorkerRuntime:
    """What one worker process keeps between tasks."""

    loop: asyncio.AbstractEventLoop
    deps: pipeline.PipelineDeps

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)


_runtime: WorkerRuntime | None = None
_runtime_pid: int | None = None


def worker_redis(settings: Settings) -> Redis:
    """The pipeline's and the reaper's Redis client. No request deadline bounds them: a
    connection gone silent fails after the timeout instead of holding a task until Celery's
    time limit, or the reaper for good."""
    return create_background_redis(settings.redis_url)


def worker_runtime() -> WorkerRuntime:
    """This process's runtime, created on first use (pools must not cross a fork)."""
    global _runtime, _runtime_pid
    if _runtime is None or _runtime_pid != os.getpid():
        settings = get_settings()
        engine = create_engine(settings.database_url, pool_size=2)
        guidance = create_guidance_client(
            settings.recycling_url,
            timeout_seconds=settings.guidance_timeout_seconds,
            attempts=settings.guidance_attempts,
            cache_seconds=settings.guidance_cache_seconds,
            down_cooldown_seconds=settings.guidance_down_cooldown_seconds,
        )
        deps = pipeline.PipelineDeps(
            sessionmaker=create_sessionmaker(engine),
            redis=worker_redis(settings),
            storage=storage_from_settings(settings),
            classifiers=registry_from_settings(settings),
            guidance=guidance,
            max_attempts=settings.analysis_max_attempts,
        )
        _runtime, _runtime_pid = WorkerRuntime(asyncio.new_event_loop(), deps), os.getpid()
    return _runtime


@app.task(name=TASK_NAME, bind=True, max_retries=MAX_TASK_RETRIES)
def analyse(self: Task, analysis_id: str) -> str:
    # The id of the request that sent it (queue.py): on every log line of the run, on the call
    # to recycling, and on the message of a retry (Celery does not carry custom headers over).
    request_id = getattr(self.request, REQUEST_ID_HEADER, None)
    context = {REQUEST_ID_HEADER: request_id} if isinstance(request_id, str) else {}
    with structlog.contextvars.bound_contextvars(**context):
        return _analyse(self, analysis_id, {"headers": context} if context else {})


def _analyse(self: Task, analysis_id: str, retry_options: dict[str, Any]) -> str:
    try:
        parsed = uuid.UUID(analysis_id)
    except (TypeError, ValueError, AttributeError):
        # No analysis can ever match it: retrying would only delay dropping it.
        log.error("task.bad_analysis_id", analysis_id=repr(analysis_id))
        return "skipped"
    runtime = worker_runtime()
    try:
        outcome = runtime.run(pipeline.run_analysis(runtime.deps, parsed))
    except Exception as exc:  # the database or Redis unreachable: retry later, then give up
        if self.request.retries >= MAX_TASK_RETRIES:
            log.error("task.gave_up", analysis_id=analysis_id, error=repr(exc))
            raise  # the reaper re-queues or fails the analysis once the stores are back
        raise self.retry(
            exc=exc, countdown=_backoff(self.request.retries), **retry_options
        ) from exc
    if outcome == "retry":
        raise self.retry(countdown=_backoff(self.request.retries), **retry_options)
    log.info("task.finished", analysis_id=analysis_id, outcome=outcome)
    return outcome


def _backoff(retries: int) -> float:
    # Exponential with jitter, so a provider outage does not bring every retry back at once.
    return min(MAX_BACKOFF_SECONDS, 2.0**retries) * random.uniform(0.5, 1.0)


@signals.setup_logging.connect
def _logging(**_: Any) -> None:
    """The service's JSON logs (LOG_LEVEL, LOG_JSON) instead of Celery's own set-up; pool
    processes inherit it, and Celery's messages (received, retry, succeeded) go through it."""
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)


@signals.worker_init.connect
def _preload(**_: Any) -> None:
    """Import the heavy libraries once in the main process, so that every pool process forked
    from it (at start, and after a crash) is up in milliseconds instead of seconds."""
    importlib.import_module("onnxruntime")
    for module in ("local", "openai_provider", "roboflow_provider"):
        importlib.import_module(f"ecosort_waste.classifier.{module}")


@signals.worker_process_init.connect
def _warm_up(**_: Any) -> None:
    """Load the model before the first task arrives, so the first photo is not slow."""
    classifiers = worker_runtime().deps.classifiers
    if classifiers.provider == "local":
        classifiers.local()  # a broken model must stop the worker at start, not per photo
        return
    try:
        classifiers.local()
    except Exception as exc:  # only the fallback of a remote provider: warn, keep working
        log.warning("worker.local_model_unavailable", error=f"{type(exc).__name__}: {exc}")


_reaper_stop = threading.Event()


@signals.worker_ready.connect
def _start_reaper(**_: Any) -> None:
    threading.Thread(target=_reaper_thread, name="reaper", daemon=True).start()


@signals.worker_shutdown.connect
def _stop_reaper(**_: Any) -> None:
    _reaper_stop.set()


def _reaper_thread() -> None:
    """The reaper loop in the worker's main process, on its own event loop and pools."""
    settings = get_settings()

    async def main() -> None:
        engine = create_engine(settings.database_url, pool_size=1)
        redis = worker_redis(settings)
        stop = asyncio.Event()
        watcher = asyncio.create_task(asyncio.to_thread(_reaper_stop.wait))
        watcher.add_done_callback(lambda _: stop.set())
        try:
            await reaper.run_reaper(
                create_sessionmaker(engine),
                redis,
                enqueue_analysis,
                broker=reaper.BrokerQueue(
                    waiting_key=settings.celery_key_prefix + QUEUE,
                    held_index_key=settings.celery_key_prefix + UNACKED_INDEX_KEY,
                    # A live worker holds a message while its task runs (the reaper takes over
                    # at the deadline) or until a retry's countdown ends.
                    live_hold_seconds=settings.analysis_deadline_seconds + MAX_BACKOFF_SECONDS,
                ),
                deadline_seconds=settings.analysis_deadline_seconds,
                lease_grace_seconds=settings.analysis_lease_grace_seconds,
                requeue_unsent_after_seconds=settings.requeue_unsent_after_seconds,
                max_attempts=settings.analysis_max_attempts,
                interval_seconds=settings.reaper_interval_seconds,
                stop=stop,
                storage=storage_from_settings(settings),
                # An hour after its form expired, an upload is not coming to an analysis.
                unread_upload_max_age_seconds=settings.upload_expires_seconds + 3600,
            )
        finally:
            await redis.aclose()
            await engine.dispose()

    asyncio.run(main())
