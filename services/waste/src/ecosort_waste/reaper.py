"""The reaper: nothing stays `processing` once its run is lost, nor past the deadline.

Where it runs, and why: a periodic loop in every worker's main process (a thread started when
the worker is ready), not Celery beat. Beat must run as exactly one extra process; a reaper in
each worker needs no extra Deployment, runs exactly when there are workers to re-queue to, and
survives any single worker's death (the others keep reaping). Several reapers are safe: rows are
taken with `FOR UPDATE SKIP LOCKED` and every change is conditional on the row's state.

A stuck analysis is re-queued while attempts remain, else marked `failed` with the reason. It is
stuck when its run is lost: `processing` for ANALYSIS_LEASE_GRACE_SECONDS and its run holds no
lease (pipeline.py), the claim's own test of a dead run (the whole worker killed, OOM). The grace
is longer than the lease, so that a claim that has written the database but not yet its lease
is never taken for one. It is stuck, too, past ANALYSIS_DEADLINE_SECONDS whatever its lease: a
run that hangs with its lease renewed (the renewal is a task of its own on the run's loop), and
a lost run while the leases do not count (below).

Should Redis lose the leases of live runs (a restart without persistence; or an outage, a
restart with persistence, a failover longer than a lease lasts: the keys are kept, but their
expiry passes while nobody can renew them), every live run would look lost and be re-queued:
its result refused (every write is conditional on its attempt), its attempt spent, and on its
last one the analysis failed. Each live run takes its lease back within LEASE_RENEW_SECONDS
(pipeline.py), so the leases count only once Redis has kept a key of the reaper's own
(REDIS_EPOCH_KEY) for the grace; until then the deadline alone decides. Every pass renews the
key's expiry, which is no longer than a lease outlives its last renewal
(`epoch_lapse_seconds`): whatever took the leases took the key too. The leases of one pass are
read with that key in one round trip, and with no row locked: the runs it looks at are mostly
alive, and their writes must not wait for Redis. Workers of earlier releases hold and renew their
leases alike (since the lease came), so a rolling upgrade changes nothing for their runs; their
reapers keep to the deadline.

An analysis `queued` for longer than REQUEUE_UNSENT_AFTER_SECONDS may have no message at all
(the API died between its commit and the enqueue, Redis refused the enqueue, a retry message
was lost with its worker). The broker's messages are not indexed by analysis, but they can be
counted: every unfinished analysis should have one, waiting in the queue or held by a live
worker (BrokerQueue). One reaper at a time (an advisory lock) sends again only as many of the
waiting analyses, oldest first, as that count falls short. Behind a backlog, a rule by age alone
would give every waiting analysis a duplicate per period, and the duplicates would lengthen the
queue that KEDA scales on. The count can still run high for a moment (an upload between its
commit and its enqueue). An extra message is harmless but not free: the task is idempotent (one
result, one event), and one that arrives while the analysis runs waits out that run's lease
(pipeline.py), retried with backoff until the run ends (or, after the task's last retry,
dropped: the run, or this reaper, still finishes the analysis).

The same loop deletes direct uploads that no analysis was made from (the API deletes those
analyses are made from, and those it refuses for good), an hour after their form expired: they
are originals, GPS and all.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from redis.asyncio import Redis
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ecosort_common import aio
from ecosort_waste import pipeline, progress
from ecosort_waste.models import UNFINISHED_STATUSES, Analysis
from ecosort_waste.storage import INCOMING, Storage

log = structlog.get_logger(__name__)

BATCH_SIZE = 100
# `analyses.error` reaches the user (pipeline.py); the details go to the log.
DID_NOT_FINISH = "the analysis did not finish in time"
# A listing of `incoming/` (one LIST request per worker with S3) is not worth every tick.
UPLOAD_SWEEP_SECONDS = 300.0


@dataclass(frozen=True)
class BrokerQueue:
    """Where the broker keeps the analyses' messages: waiting in the queue's Redis list, or held
    by a worker (running, or waiting out a retry's countdown) in kombu's unacknowledged set,
    scored by when the worker took it. A dead worker's holds stay there until the visibility
    timeout (an hour), so only holds younger than `live_hold_seconds`, the longest a live worker
    keeps one, count."""

    waiting_key: str
    held_index_key: str
    live_hold_seconds: float


@dataclass
class ReapReport:
    requeued: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    reenqueued: list[uuid.UUID] = field(default_factory=list)


# The key of the advisory lock one reaper holds while it re-sends unsent analyses.
UNSENT_LOCK = 0x7EC0_5047
# Since when (Unix time) reapers have reached this Redis, each pass within
# `epoch_lapse_seconds` of the last: how long a live run has had to take its lease back.
REDIS_EPOCH_KEY = "waste:reaper:epoch"


async def reap_once(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    enqueue: Callable[[uuid.UUID], None],
    *,
    broker: BrokerQueue,
    deadline_seconds: float,
    lease_grace_seconds: float,
    requeue_unsent_after_seconds: float,
    max_attempts: int,
) -> ReapReport:
    report = ReapReport()
    await _reap_stuck(
        sessionmaker, redis, enqueue, report, deadline_seconds, lease_grace_seconds, max_attempts
    )
    # Only now: the analyses re-queued above have their messages, so they are not counted short.
    await _resend_unsent(sessionmaker, redis, enqueue, report, broker, requeue_unsent_after_seconds)
    if report.requeued or report.failed or report.reenqueued:
        log.warning(
            "reaper.reaped",
            requeued=len(report.requeued),
            failed=len(report.failed),
            reenqueued=len(report.reenqueued),
        )
    return report


async def _reap_stuck(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    enqueue: Callable[[uuid.UUID], None],
    report: ReapReport,
    deadline_seconds: float,
    lease_grace_seconds: float,
    max_attempts: int,
) -> None:
    now = datetime.now(UTC)
    cutoff = now - timedelta(seconds=deadline_seconds)
    grace_cutoff = now - timedelta(seconds=lease_grace_seconds)
    failures: dict[uuid.UUID, tuple[str | None, int, int]] = {}
    next_attempts: dict[uuid.UUID, int] = {}
    # Read without a lock: most runs past the grace are alive, and a live run's writes (its
    # result, a requeue) must not wait behind the reaper's round trips to Redis, which a slow
    # or silent Redis stretches to the socket timeout. Only the lost ones are locked, below.
    async with sessionmaker() as session, session.begin():
        candidates = (
            await session.execute(
                select(Analysis.id, Analysis.attempts, Analysis.started_at)
                .where(
                    Analysis.status == "processing",
                    Analysis.started_at < max(cutoff, grace_cutoff),
                )
                # Oldest first: the live runs among them (only their leases tell) must not crowd
                # those past the deadline out of the batch.
                .order_by(Analysis.started_at)
                .limit(BATCH_SIZE)
            )
        ).all()
    # Also with no candidate: the epoch then starts as soon as Redis is back.
    lost = await _without_lease(
        redis, [row.id for row in candidates if row.started_at >= cutoff], lease_grace_seconds
    )
    # Each of the lost with the attempt that was lost: a later claim is a new run.
    doomed: dict[uuid.UUID, tuple[int, str]] = {}
    for candidate in candidates:
        if candidate.started_at < cutoff:
            doomed[candidate.id] = (
                candidate.attempts,
                f"after {deadline_seconds:g} s (worker lost or hung?)",
            )
        elif candidate.id in lost:
            doomed[candidate.id] = (candidate.attempts, "and its run holds no lease (worker lost)")
    if not doomed:
        return
    # The database has the stage and progress of the claim; Redis has the last reported. Read
    # before the rows are locked, for the same reason.
    reported = {
        analysis_id: await progress.last_reached(redis, analysis_id) for analysis_id in doomed
    }
    async with sessionmaker() as session, session.begin():
        stuck = (
            await session.execute(
                select(Analysis.id, Analysis.attempts, Analysis.stage, Analysis.progress)
                .where(Analysis.id.in_(doomed), Analysis.status == "processing")
                .with_for_update(skip_locked=True)
            )
        ).all()
        for row in stuck:
            attempt, why = doomed[row.id]
            if row.attempts != attempt:  # claimed again since it was read
                continue
            live_stage, reached = reported[row.id]
            stage = live_stage or row.stage
            reached = row.progress if reached is None else reached
            where = f"stage {stage}" if stage else "its first stage"
            values: dict[str, object]
            if row.attempts < max_attempts:
                # No `error` while it waits again: the app reads one as a failure.
                values = {"status": "queued", "stage": None, "progress": 0, "error": None}
                report.requeued.append(row.id)
                next_attempts[row.id] = row.attempts + 1
            else:
                values = {
                    "status": "failed",
                    "stage": stage,
                    "progress": reached,
                    "error": DID_NOT_FINISH,
                    "completed_at": now,
                }
                failures[row.id] = (stage, reached, row.attempts)
                report.failed.append(row.id)
            log.warning(
                "reaper.stuck",
                analysis_id=str(row.id),
                outcome=values["status"],
                detail=f"attempt {row.attempts} of {max_attempts} still in {where} {why}",
            )
            await session.execute(
                update(Analysis)
                .where(
                    Analysis.id == row.id,
                    Analysis.status == "processing",
                    Analysis.attempts == row.attempts,
                )
                .values(updated_at=now, **values)
            )
    # After the commit: a task must never see the old state. Each on its own, failures first:
    # once committed, nothing picks a failure up again, so one error (the broker down) must not
    # keep the others from their final event. A re-queue left unsent is `queued` with no
    # message, which `_resend_unsent` sends later.
    for analysis_id, (stage, reached, attempt) in failures.items():
        try:
            await progress.publish_final(
                redis,
                analysis_id,
                status="failed",
                stage=stage,
                progress=reached,
                attempt=attempt,
                error=DID_NOT_FINISH,
            )
        except Exception as exc:
            _log_unsent("reaper.failure_not_published", analysis_id, exc)
    for analysis_id in report.requeued:
        try:
            # Said before it is sent: a worker quick to claim it must not be followed by "queued".
            await progress.publish_requeued(
                redis, analysis_id, next_attempt=next_attempts[analysis_id]
            )
            enqueue(analysis_id)
        except Exception as exc:
            _log_unsent("reaper.requeue_not_sent", analysis_id, exc)


def epoch_lapse_seconds() -> float:
    """How long the epoch outlives the last pass that reached Redis: no longer than the lease
    of a run that renewed on time outlives its last renewal. Then, whenever Redis stops being
    reached for long enough that live runs' leases expire (an outage, a restart that kept its
    keys: a key's expiry is a time, which passes while nobody can renew), or a snapshot older
    than that is loaded, the epoch has lapsed too, and the leases do not count until the live
    runs have had the grace to take theirs back. A pass must come sooner (every
    REAPER_INTERVAL_SECONDS, worker.py checks); a late one only starts the epoch again."""
    return pipeline.LEASE_SECONDS - pipeline.LEASE_RENEW_SECONDS


async def _without_lease(
    redis: Redis, analysis_ids: list[uuid.UUID], grace_seconds: float
) -> set[uuid.UUID]:
    """Those of `analysis_ids` whose run holds no lease; none while Redis may have lost the
    leases of live runs that have not yet taken them back (its epoch is younger than the
    grace)."""
    now = time.time()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(REDIS_EPOCH_KEY, now, nx=True)
        pipe.pexpire(REDIS_EPOCH_KEY, int(epoch_lapse_seconds() * 1000))
        pipe.mget([REDIS_EPOCH_KEY, *map(pipeline.lease_key, analysis_ids)])
        _, _, (epoch, *leases) = await pipe.execute()
    if now - float(epoch) < grace_seconds:
        return set()
    return {
        analysis_id
        for analysis_id, lease in zip(analysis_ids, leases, strict=True)
        if lease is None
    }


def _log_unsent(event: str, analysis_id: uuid.UUID, exc: Exception) -> None:
    log.warning(event, analysis_id=str(analysis_id), error=f"{type(exc).__name__}: {exc}")


async def _resend_unsent(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    enqueue: Callable[[uuid.UUID], None],
    report: ReapReport,
    broker: BrokerQueue,
    unsent_after_seconds: float,
) -> None:
    now = datetime.now(UTC)
    async with sessionmaker() as session, session.begin():
        # One reaper at a time: two would see the same shortfall and each send its share.
        if not await session.scalar(select(func.pg_try_advisory_xact_lock(UNSENT_LOCK))):
            return
        waiting = (
            await session.execute(
                select(Analysis.id)
                .where(
                    Analysis.status == "queued",
                    Analysis.updated_at < now - timedelta(seconds=unsent_after_seconds),
                )
                .order_by(Analysis.updated_at)
                .limit(BATCH_SIZE)
                .with_for_update(skip_locked=True)
            )
        ).all()
        if not waiting:
            return
        missing = await _messages_missing(session, redis, broker)
        report.reenqueued = [row.id for row in waiting[: max(0, missing)]]
        if not report.reenqueued:
            return
        # Touched, so each is sent at most once per period.
        await session.execute(
            update(Analysis).where(Analysis.id.in_(report.reenqueued)).values(updated_at=now)
        )
        # Sent before the commit releases the lock, so the next reaper counts these messages.
        # Their state does not change: a task that claims one now waits for the commit.
        for analysis_id in report.reenqueued:
            enqueue(analysis_id)


async def _messages_missing(session: AsyncSession, redis: Redis, broker: BrokerQueue) -> int:
    """Unfinished analyses minus the broker's live messages. The broker is read first: a task
    that finishes between the two reads then makes the figure low, not high."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.llen(broker.waiting_key)
        pipe.zcount(broker.held_index_key, time.time() - broker.live_hold_seconds, "+inf")
        waiting, held = await pipe.execute()
    unfinished = await session.scalar(
        select(func.count()).select_from(Analysis).where(Analysis.status.in_(UNFINISHED_STATUSES))
    )
    return (unfinished or 0) - int(waiting) - int(held)


async def sweep_unread_uploads(storage: Storage, max_age_seconds: float) -> int:
    """Direct uploads no analysis was made from: the API deletes the ones it makes analyses from
    (or refuses for good), so what is left under `incoming/` past the age is an original (GPS
    and all) nobody will ask for."""
    cutoff = datetime.now(UTC) - timedelta(seconds=max_age_seconds)
    deleted = await asyncio.to_thread(storage.delete_prefix, INCOMING, cutoff)
    if deleted:
        log.info("reaper.unread_uploads_deleted", deleted=deleted)
    return deleted


async def run_reaper(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    enqueue: Callable[[uuid.UUID], None],
    *,
    broker: BrokerQueue,
    deadline_seconds: float,
    lease_grace_seconds: float,
    requeue_unsent_after_seconds: float,
    max_attempts: int,
    interval_seconds: float,
    stop: asyncio.Event,
    storage: Storage,
    unread_upload_max_age_seconds: float,
) -> None:
    """Reap every `interval_seconds`, and sweep unread uploads every UPLOAD_SWEEP_SECONDS,
    until `stop` is set; a failing tick is logged, not fatal."""
    last_sweep = -math.inf
    while not stop.is_set():
        try:
            # Without a bound, a database connection gone silent would stop the reaper, and
            # stuck analyses with it, for good.
            async with asyncio.timeout(aio.BACKGROUND_ROUND_SECONDS):
                await reap_once(
                    sessionmaker,
                    redis,
                    enqueue,
                    broker=broker,
                    deadline_seconds=deadline_seconds,
                    lease_grace_seconds=lease_grace_seconds,
                    requeue_unsent_after_seconds=requeue_unsent_after_seconds,
                    max_attempts=max_attempts,
                )
            if time.monotonic() - last_sweep >= UPLOAD_SWEEP_SECONDS:
                last_sweep = time.monotonic()
                await sweep_unread_uploads(storage, unread_upload_max_age_seconds)
        except Exception as exc:  # the database, Redis or storage is down: try again next tick
            log.warning("reaper.tick_failed", error=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_seconds)
