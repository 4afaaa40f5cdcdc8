"""The Celery app's configuration and the API's side of the queue: sending an analysis.

Apart from worker.py (the task, its pipeline and the model runtime) so that the API process
imports only Celery's client to enqueue: before, its first upload imported the pipeline and
onnxruntime, a pause of about half a second and memory the API never uses.

Delivery guarantees, and why each setting:
- `task_acks_late` + `task_reject_on_worker_lost`: a task is acknowledged only after it ran;
  if its process dies (kill -9, OOM), the message goes back to the queue for another process.
- `worker_prefetch_multiplier = 1`: a busy process does not sit on messages others could run.
- `worker_cancel_long_running_tasks_on_connection_loss = False` (Celery 6 makes it True): when a
  worker's broker connection drops, kombu restores its unacknowledged messages anyway; killing
  the running tasks too would throw away runs about to complete, and spend an attempt on each
  (on the last one, failing the analysis). They go on; the restored duplicate waits out the
  run's lease (pipeline.py) and then finds the analysis finished.
- the Redis `visibility_timeout` (redelivery of messages whose whole worker vanished) is longer
  than the longest task; the reaper re-queues sooner: once the run's lease has expired
  (ANALYSIS_LEASE_GRACE_SECONDS after its claim at the earliest), else at
  ANALYSIS_DEADLINE_SECONDS.
"""

from __future__ import annotations

import uuid

import structlog
from celery import Celery

from ecosort_waste.config import Settings

QUEUE = "analyses"
TASK_NAME = "ecosort_waste.analyse"
# The Redis hash of the messages workers hold (running, or waiting out a retry's countdown) and
# its index, scored by when each was taken. Named here, not left to kombu's defaults, because the
# reaper counts the index.
UNACKED_KEY = "unacked"
# Longer than kombu's blocking reads (BRPOP waits 1 s), short enough to fail a publish fast.
BROKER_SOCKET_TIMEOUT_SECONDS = 5.0
UNACKED_INDEX_KEY = "unacked_index"
# The message header naming the request that sent the analysis (its X-Request-ID), so that the
# worker's log lines and its call to recycling can be found with the request's.
REQUEST_ID_HEADER = "request_id"


def configure_celery(settings: Settings) -> Celery:
    # A task hung past twice the deadline has its process killed (the reaper has re-queued
    # the analysis by then). No soft limit: its exception could land inside the event loop.
    task_time_limit = settings.analysis_deadline_seconds * 2
    if settings.celery_visibility_timeout_seconds <= task_time_limit:
        raise ValueError(
            "CELERY_VISIBILITY_TIMEOUT_SECONDS must exceed twice ANALYSIS_DEADLINE_SECONDS (the "
            "task's time limit), or tasks still running would be delivered twice"
        )
    # No result backend: results live in PostgreSQL. With one, every task's return value was
    # stored, a GET and a SET in Redis per photo that nobody reads; task_ignore_result did not
    # prevent it, as send_task marks each message "do not ignore the result".
    celery = Celery("ecosort_waste", broker=settings.redis_url)
    transport = {
        # A hung broker fails a publish in seconds (the API then leaves the analysis to the
        # reaper) rather than holding the upload for the whole outage.
        "socket_timeout": BROKER_SOCKET_TIMEOUT_SECONDS,
        "socket_connect_timeout": 2.0,
        "visibility_timeout": settings.celery_visibility_timeout_seconds,
        "global_keyprefix": settings.celery_key_prefix,
        "unacked_key": UNACKED_KEY,
        "unacked_index_key": UNACKED_INDEX_KEY,
    }
    celery.conf.update(
        task_default_queue=QUEUE,
        task_routes={TASK_NAME: {"queue": QUEUE}},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # A new pool process loads the model before it reports up; on a busy node that takes
        # longer than Celery's 4 s default, and a process killed for it never runs a task.
        worker_proc_alive_timeout=60,
        task_time_limit=task_time_limit,
        # One quick retry of a failed publish: the reaper sends what was never sent.
        task_publish_retry_policy={
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 0.5,
        },
    )
    return celery


def send_analysis(celery: Celery, analysis_id: uuid.UUID) -> None:
    """Queue an analysis for the pipeline; synchronous (the API calls it in a thread, which
    keeps the request's log context: its request id goes along as a message header)."""
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    headers = {REQUEST_ID_HEADER: request_id} if request_id else None
    celery.send_task(TASK_NAME, args=[str(analysis_id)], queue=QUEUE, headers=headers)


def connect(celery: Celery) -> None:
    """Open the broker connection and load the transport now, not on the first upload."""
    with celery.producer_or_acquire() as producer:
        producer.connection.ensure_connection(max_retries=1)
