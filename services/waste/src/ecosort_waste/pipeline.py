"""The analysis pipeline: load → classify → guide → save, with progress published to Redis.

Idempotent by analysis id. A run first *claims* the analysis (queued or processing →
processing, attempts + 1); every later write is conditional on that attempt number, so a run
that was superseded (its worker presumed dead and the analysis re-queued) can never overwrite
the newer run, and a completed or failed analysis is never processed again.

A run also holds a *lease* while it lives: a Redis key with a short TTL that it keeps renewing.
A `processing` analysis is taken over only once its lease has expired (its run died: kill -9,
OOM). A second message while the run lives (kombu restores a worker's unacknowledged messages
when its broker connection drops, and the running task goes on) is retried later instead: taking
over would cost the live run its attempt and, on the last one, fail an analysis about to
complete. A `queued` analysis is claimed whatever a run's lease says (the reaper re-queues a run
past the deadline even while its lease is renewed: hung), but not while another delivery is
claiming it. The reaper also re-queues a run whose lease has expired (reaper.py).

The database is written twice per analysis (the claim, then the result with its outbox event);
the stages in between go to Redis only, which is where the API reads live progress. Statements
address the `analyses` table directly (SQLAlchemy Core): this is the worker's hot path, and the
ORM's bookkeeping would only add cost to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

import structlog
from PIL import Image, UnidentifiedImageError
from redis.asyncio import Redis
from sqlalchemy import Update, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ecosort_common.aio import cancel_and_wait
from ecosort_common.events import ANALYSIS_COMPLETED
from ecosort_common.outbox import add_event
from ecosort_waste import progress
from ecosort_waste.classifier.registry import LOCAL, ClassifierRegistry, ProviderAnswer
from ecosort_waste.classifier.remote import ProviderError
from ecosort_waste.guidance import GuidanceClient
from ecosort_waste.models import FINAL_STATUSES, UNFINISHED_STATUSES, analyses, outbox
from ecosort_waste.storage import ObjectNotFound, Storage

log = structlog.get_logger(__name__)

# Progress (0-100) reported when a stage starts; 100 is reserved for "completed".
STAGE_PROGRESS = {"load": 5, "classify": 20, "guide": 70, "save": 90}
# The local networks look at 224 and 260 px squares; JPEGs are decoded at a reduced DCT scale
# that still covers the larger one.
DECODE_AT_LEAST = (260, 260)

Outcome = Literal["completed", "failed", "retry", "skipped", "superseded"]

# Short, so that the redelivery of a killed run's message takes over within seconds; renewed
# often enough to survive a missed renewal (the event loop is busy while the local model runs).
LEASE_SECONDS = 10.0
LEASE_RENEW_SECONDS = 3.0
# The lease's value between taking the key and the database claim, whose attempt it then holds.
CLAIMING = "claiming"
# KEYS: the lease. ARGV: the run's attempt, the TTL in ms, CLAIMING. Renewed while the lease is
# this run's or gone (expired after a stall, or lost with a Redis restart); left alone, but
# watched, while a delivery is claiming (it may fail, and its mark expire); given up (0) once
# another run holds it: a run given up on must not keep its successor's lease alive.
_RENEW_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[3] then
  return 2
end
return 0
"""
# KEYS: the lease. ARGV: the run's attempt. A finished run frees its lease at once, so that its
# own retry (a transient error) need not wait it out; a successor's stays.
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass
class PipelineDeps:
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: Redis
    storage: Storage
    classifiers: ClassifierRegistry
    guidance: GuidanceClient
    max_attempts: int


@dataclass(frozen=True)
class Claim:
    analysis_id: uuid.UUID
    attempt: int
    owner_id: uuid.UUID
    image_key: str


class Superseded(Exception):
    """Another run took the analysis over; this one must stop without writing."""


# What `analyses.error` says: the app shows it to the user, so it names what went wrong in
# their terms and never carries an exception's text (storage keys, file paths, provider
# replies that can quote credentials). The details go to the log with the analysis id.
CLASSIFIER_UNAVAILABLE = "the classifier is unavailable"
IMAGE_MISSING = "the stored photo is missing"
IMAGE_UNREADABLE = "the stored photo cannot be read"


class PermanentFailure(Exception):
    """Retrying cannot help (the stored image is gone or unreadable)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


async def run_analysis(deps: PipelineDeps, analysis_id: uuid.UUID) -> Outcome:
    """Process one analysis. Returns "retry" when the message should be tried again later: a
    transient error (the analysis is then back in `queued`), or a live run holding the analysis
    (its lease). Failures are recorded, never raised."""
    claim = await _claim(deps, analysis_id)
    if claim is None:
        if await _republish_final_state(deps, analysis_id) in UNFINISHED_STATUSES:
            # A live run holds it: this message is a duplicate. Retried later rather than
            # dropped, in case that run dies first (its lease then expires); once it finishes,
            # the retry is skipped.
            log.info("pipeline.run_alive", analysis_id=str(analysis_id))
            return "retry"
        return "skipped"
    if claim.attempt > deps.max_attempts:
        await fail(deps, analysis_id, f"gave up after {deps.max_attempts} attempts")
        return "failed"
    renewal = asyncio.create_task(_renew_lease(deps, claim))
    try:
        result = await _run_stages(deps, claim)
        await _save(deps, claim, result)
    except Superseded:
        log.info("pipeline.superseded", analysis_id=str(analysis_id), attempt=claim.attempt)
        return "superseded"
    except PermanentFailure as exc:
        await fail(deps, analysis_id, exc.reason, attempt=claim.attempt, detail=str(exc))
        return "failed"
    except ProviderError as exc:
        if claim.attempt >= deps.max_attempts:
            await fail(
                deps, analysis_id, CLASSIFIER_UNAVAILABLE, attempt=claim.attempt, detail=str(exc)
            )
            return "failed"
        if not await _requeue(deps, claim):
            # The reaper re-queued it meanwhile and sent a message of its own: a retry of this
            # one would be a second.
            log.info("pipeline.superseded", analysis_id=str(analysis_id), attempt=claim.attempt)
            return "superseded"
        log.warning("pipeline.retrying", analysis_id=str(analysis_id), detail=str(exc))
        return "retry"
    except Exception:
        # Redis or the database failed mid-run. Celery retries the task, but its retry can be
        # lost with the broker: back in `queued` (if the database answers), the analysis is
        # sent again by the reaper within REQUEUE_UNSENT_AFTER_SECONDS, instead of sitting in
        # `processing` until the deadline says its run is lost.
        with contextlib.suppress(Exception):
            await _requeue(deps, claim)
        raise
    finally:
        await cancel_and_wait(renewal)
        await _release_lease(deps, claim)
    await progress.publish_final(
        deps.redis,
        analysis_id,
        status="completed",
        stage="save",
        progress=100,
        attempt=claim.attempt,
        result=result,
    )
    return "completed"


async def _run_stages(deps: PipelineDeps, claim: Claim) -> dict[str, Any]:
    await _enter_stage(deps, claim, "load")
    image = await _load_image(deps.storage, claim.image_key)
    await _enter_stage(deps, claim, "classify")
    if deps.classifiers.provider == LOCAL:
        # Pure CPU, and a worker process runs one task at a time: a thread would only add a
        # hand-over of the GIL in each direction.
        answer = deps.classifiers.classify(image)
    else:  # waits on a remote API
        answer = await asyncio.to_thread(deps.classifiers.classify, image)
    await _enter_stage(deps, claim, "guide")
    category = answer.classification.category
    guidance = await _guidance(deps, claim, category) if category is not None else None
    await _enter_stage(deps, claim, "save")
    return result_document(answer, guidance)


async def _guidance(deps: PipelineDeps, claim: Claim, category: str) -> dict[str, Any] | None:
    """Guidance, or None: it is optional, so no error of the client, even one it did not
    foresee, may cost the analysis an attempt."""
    try:
        return await deps.guidance.fetch(category)
    except Exception as exc:
        log.warning(
            "pipeline.guidance_failed",
            analysis_id=str(claim.analysis_id),
            error=f"{type(exc).__name__}: {exc}",
        )
        return None


def result_document(answer: ProviderAnswer, guidance: dict[str, Any] | None) -> dict[str, Any]:
    """The `analyses.result` JSON (the contract the API and the app read)."""
    c = answer.classification
    return {
        "category": c.category,
        "confidence": round(float(c.confidence), 4),
        "candidates": [
            {"category": candidate.category, "confidence": round(float(candidate.confidence), 4)}
            for candidate in c.candidates
        ],
        "not_sure": bool(c.not_sure),
        "mapping_note": c.mapping_note,
        "guidance": guidance,
        "guidance_available": guidance is not None,
        "model_version": c.model_version,
        "head_version": c.head_version,
        "provider": answer.provider,
    }


async def _load_image(storage: Storage, key: str) -> Image.Image:
    try:
        data = await asyncio.to_thread(storage.get, key)
    except ObjectNotFound as exc:
        raise PermanentFailure(IMAGE_MISSING, f"no object {key!r}") from exc
    try:
        return decode_stored(data)
    except (UnidentifiedImageError, OSError) as exc:
        raise PermanentFailure(IMAGE_UNREADABLE, f"{key!r} cannot be decoded: {exc}") from exc


def decode_stored(data: bytes) -> Image.Image:
    """A stored photo (the API's sanitised JPEG) as the classifier gets it."""
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", DECODE_AT_LEAST)  # a no-op for formats other than JPEG
    image.load()
    return image


def lease_key(analysis_id: uuid.UUID) -> str:
    return f"{progress.state_key(analysis_id)}:lease"


async def _claim(deps: PipelineDeps, analysis_id: uuid.UUID) -> Claim | None:
    """queued → processing with attempts + 1, and processing too when no live run holds its
    lease; None when final, unknown, or held by a live run."""
    key = lease_key(analysis_id)
    # Taken before the database claim, so that two deliveries at once cannot both find the
    # lease free and both take over.
    free = await deps.redis.set(key, CLAIMING, nx=True, px=int(LEASE_SECONDS * 1000))
    claimable: tuple[str, ...]
    if free:
        claimable = UNFINISHED_STATUSES
    elif await deps.redis.get(key) in (CLAIMING, None):
        # Another delivery is claiming it right now: claiming `queued` here could leave that
        # one to take over this run and spend an attempt. Its outcome decides.
        return None
    else:
        # A run's lease: that run lives, or was given up on by the reaper, which re-queued it.
        claimable = ("queued",)
    now = datetime.now(UTC)
    async with deps.sessionmaker() as session, session.begin():
        row = (
            await session.execute(
                update(analyses)
                .where(analyses.c.id == analysis_id, analyses.c.status.in_(claimable))
                .values(
                    status="processing",
                    stage="load",
                    progress=STAGE_PROGRESS["load"],
                    attempts=analyses.c.attempts + 1,
                    error=None,
                    started_at=now,
                    updated_at=now,
                )
                .returning(analyses.c.attempts, analyses.c.owner_id, analyses.c.image_key)
            )
        ).first()
    if row is None:
        return None
    await deps.redis.set(key, str(row.attempts), px=int(LEASE_SECONDS * 1000))
    return Claim(analysis_id, row.attempts, row.owner_id, row.image_key)


async def _renew_lease(deps: PipelineDeps, claim: Claim) -> None:
    """Keeps the run's lease alive until cancelled, or until another run holds it."""
    key, attempt = lease_key(claim.analysis_id), str(claim.attempt)
    while True:
        await asyncio.sleep(LEASE_RENEW_SECONDS)
        try:
            renewed = await cast(
                Awaitable[int],
                deps.redis.eval(
                    _RENEW_SCRIPT, 1, key, attempt, str(int(LEASE_SECONDS * 1000)), CLAIMING
                ),
            )
        except Exception as exc:  # Redis down for a moment: the next renewal may get through
            log.warning(
                "pipeline.lease_not_renewed",
                analysis_id=str(claim.analysis_id),
                error=f"{type(exc).__name__}: {exc}",
            )
            continue
        if not renewed:
            return


async def _release_lease(deps: PipelineDeps, claim: Claim) -> None:
    try:
        await cast(
            Awaitable[int],
            deps.redis.eval(_RELEASE_SCRIPT, 1, lease_key(claim.analysis_id), str(claim.attempt)),
        )
    except Exception as exc:  # it expires on its own
        log.warning(
            "pipeline.lease_not_released",
            analysis_id=str(claim.analysis_id),
            error=f"{type(exc).__name__}: {exc}",
        )


async def _enter_stage(deps: PipelineDeps, claim: Claim, stage: str) -> None:
    await progress.publish_event(
        deps.redis,
        claim.analysis_id,
        "progress",
        {"status": "processing", "stage": stage, "progress": STAGE_PROGRESS[stage]},
        attempt=claim.attempt,
    )


async def _save(deps: PipelineDeps, claim: Claim, result: dict[str, Any]) -> None:
    """The result and the `analysis.completed` event in one transaction (the outbox)."""
    completed_at = datetime.now(UTC)
    async with deps.sessionmaker() as session, session.begin():
        updated = await session.execute(
            _own_run(claim).values(
                status="completed",
                stage="save",
                progress=100,
                result=result,
                error=None,
                completed_at=completed_at,
                updated_at=completed_at,
            )
        )
        if updated.rowcount == 0:  # type: ignore[attr-defined]
            raise Superseded
        await add_event(
            session,
            outbox,
            ANALYSIS_COMPLETED,
            {
                "analysis_id": str(claim.analysis_id),
                "user_id": str(claim.owner_id),
                "category": result["category"],
                "confidence": result["confidence"],
                "completed_at": completed_at.isoformat(),
            },
        )


def _own_run(claim: Claim) -> Update:
    """An UPDATE that only matches while this run still owns the analysis."""
    return update(analyses).where(
        analyses.c.id == claim.analysis_id,
        analyses.c.status == "processing",
        analyses.c.attempts == claim.attempt,
    )


async def fail(
    deps: PipelineDeps,
    analysis_id: uuid.UUID,
    reason: str,
    *,
    attempt: int | None = None,
    detail: str | None = None,
) -> bool:
    """Mark an unfinished analysis failed with its reason (user-safe, stored and published)
    and tell the watchers; `detail` is only logged. With `attempt`, only while that run still
    owns it."""
    condition = [analyses.c.id == analysis_id, analyses.c.status.in_(UNFINISHED_STATUSES)]
    if attempt is not None:
        condition.append(analyses.c.attempts == attempt)
    # The database knows the stage of the claim; Redis knows the last stage reached.
    stage, reached = await progress.last_reached(deps.redis, analysis_id)
    failed_at = datetime.now(UTC)
    async with deps.sessionmaker() as session, session.begin():
        row = (
            await session.execute(
                update(analyses)
                .where(*condition)
                .values(
                    status="failed",
                    stage=stage or analyses.c.stage,
                    progress=analyses.c.progress if reached is None else reached,
                    error=reason,
                    # When it reached its final state, whichever: the app times both alike.
                    completed_at=failed_at,
                    updated_at=failed_at,
                )
                .returning(analyses.c.stage, analyses.c.progress, analyses.c.attempts)
            )
        ).first()
    if row is None:
        return False
    log.warning("pipeline.failed", analysis_id=str(analysis_id), reason=reason, detail=detail)
    await progress.publish_final(
        deps.redis,
        analysis_id,
        status="failed",
        stage=row.stage,
        progress=row.progress,
        attempt=row.attempts,
        error=reason,
    )
    return True


async def _requeue(deps: PipelineDeps, claim: Claim) -> bool:
    """Back to `queued` until the retry runs, so the reaper does not count it as stuck. No
    `error`: the app reads one as the analysis having failed. False when this run no longer
    owns the analysis."""
    async with deps.sessionmaker() as session, session.begin():
        updated = await session.execute(
            _own_run(claim).values(
                status="queued", stage=None, progress=0, error=None, updated_at=datetime.now(UTC)
            )
        )
    if not updated.rowcount:  # type: ignore[attr-defined]
        return False
    await progress.publish_requeued(deps.redis, claim.analysis_id, next_attempt=claim.attempt + 1)
    return True


async def _republish_final_state(deps: PipelineDeps, analysis_id: uuid.UUID) -> str | None:
    """A duplicate delivery of a finished analysis: nothing to do, except repairing the final
    event if a crash after the database commit kept it from being published. Returns the
    analysis's status (None: unknown)."""
    async with deps.sessionmaker() as session:
        row = (
            await session.execute(
                select(
                    analyses.c.status,
                    analyses.c.stage,
                    analyses.c.progress,
                    analyses.c.result,
                    analyses.c.error,
                    analyses.c.attempts,
                ).where(analyses.c.id == analysis_id)
            )
        ).first()
    if row is None:
        return None
    if row.status not in FINAL_STATUSES:
        return str(row.status)
    state = await progress.read_state(deps.redis, analysis_id)
    if state.get("status") == row.status:
        return str(row.status)
    await progress.publish_final(
        deps.redis,
        analysis_id,
        status=row.status,
        stage=row.stage,
        progress=row.progress,
        attempt=row.attempts,
        result=row.result,
        error=row.error,
    )
    return str(row.status)
