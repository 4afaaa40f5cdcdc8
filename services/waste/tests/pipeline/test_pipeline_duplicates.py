"""pipeline.py against real PostgreSQL and Redis when one analysis has two messages or two runs:
a retry after the reaper took the analysis over, a duplicate delivery while the run lives (the
broker restored its message), and one after the run died."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from PIL import Image
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ecosort_common.db import create_engine, create_sessionmaker
from ecosort_common.redis import create_redis
from ecosort_waste import pipeline, progress, reaper
from ecosort_waste.classifier.base import Classification
from ecosort_waste.classifier.registry import ClassifierRegistry
from ecosort_waste.classifier.remote import CallBudget, ProviderError
from ecosort_waste.config import Settings
from ecosort_waste.queue import configure_celery

from .conftest import FakeThirdParties, make_deps
from .test_pipeline import BrokenLocal, completed_events, load, new_analysis


class ReapedThenFails:
    """A provider so slow that the reaper re-queues the analysis meanwhile, then errors."""

    name = "openai"

    def __init__(self, database_url: str, redis_url: str) -> None:
        self.database_url, self.redis_url = database_url, redis_url
        self.sent: list[uuid.UUID] = []

    def classify(self, image: Image.Image, budget: CallBudget) -> Classification:
        async def reap() -> None:
            engine = create_engine(self.database_url, pool_size=1)
            redis = create_redis(self.redis_url)
            try:
                report = await reaper.reap_once(
                    create_sessionmaker(engine),
                    redis,
                    self.sent.append,
                    broker=reaper.BrokerQueue("dup:analyses", "dup:unacked_index", 360),
                    deadline_seconds=0,
                    lease_grace_seconds=3600,
                    requeue_unsent_after_seconds=3600,
                    max_attempts=3,
                )
                assert report.requeued
            finally:
                await redis.aclose()
                await engine.dispose()

        asyncio.run(reap())  # in the pipeline's worker thread, so a loop of its own
        raise ProviderError("HTTP 503 from the provider")


async def test_a_retry_after_the_reaper_took_over_is_not_a_second_message(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    database_url: str,
    redis_url: str,
    third_parties: FakeThirdParties,
) -> None:
    remote = ReapedThenFails(database_url, redis_url)
    registry = ClassifierRegistry("openai", local_loader=BrokenLocal, remote=remote)
    deps = make_deps(settings, sessionmaker, redis, registry)
    analysis = await new_analysis(deps)

    # Not "retry": the task would send a message besides the reaper's.
    assert await pipeline.run_analysis(deps, analysis.id) == "superseded"

    assert remote.sent == [analysis.id]
    row = await load(deps, analysis.id)
    assert (row.status, row.attempts, row.error) == ("queued", 1, None)


async def wait_until_classifying(third_parties: FakeThirdParties, sent_before: int) -> None:
    for _ in range(500):
        if len(third_parties.chat_requests()) > sent_before:  # in flight, held by the stand-in
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the run never called the provider")


@asynccontextmanager
async def run_held_in_classify(
    deps: pipeline.PipelineDeps, third_parties: FakeThirdParties, analysis_id: uuid.UUID
) -> AsyncIterator[asyncio.Task[pipeline.Outcome]]:
    """A run of the analysis, held while it classifies; the provider answers on leaving."""
    third_parties.hang_openai.set()
    sent = len(third_parties.chat_requests())
    run = asyncio.create_task(pipeline.run_analysis(deps, analysis_id))
    try:
        await wait_until_classifying(third_parties, sent)
        yield run
    finally:
        third_parties.release.set()


async def test_a_duplicate_while_the_run_lives_neither_counts_an_attempt_nor_fails_it(
    deps: pipeline.PipelineDeps, third_parties: FakeThirdParties
) -> None:
    """As when a worker's broker connection drops mid-task: kombu restores its message, another
    worker gets it, and the first run goes on. Here on the last attempt, which a takeover
    failed ("gave up after 3 attempts") although the run was about to complete."""
    analysis = await new_analysis(deps, status="queued", attempts=deps.max_attempts - 1)
    async with run_held_in_classify(deps, third_parties, analysis.id) as first:
        assert await pipeline.run_analysis(deps, analysis.id) == "retry"  # later, not now

        row = await load(deps, analysis.id)
        assert (row.status, row.attempts) == ("processing", deps.max_attempts)
    assert await first == "completed"
    row = await load(deps, analysis.id)
    assert (row.status, row.attempts, row.error) == ("completed", deps.max_attempts, None)
    assert len(await completed_events(deps, analysis.id)) == 1
    # The duplicate's retry finds it done.
    assert await pipeline.run_analysis(deps, analysis.id) == "skipped"


async def test_a_run_keeps_its_lease_past_its_ttl(
    deps: pipeline.PipelineDeps, third_parties: FakeThirdParties, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "LEASE_SECONDS", 0.6)
    monkeypatch.setattr(pipeline, "LEASE_RENEW_SECONDS", 0.1)
    analysis = await new_analysis(deps)
    async with run_held_in_classify(deps, third_parties, analysis.id) as first:
        await asyncio.sleep(1.5)  # over twice the TTL

        assert await pipeline.run_analysis(deps, analysis.id) == "retry"
    assert await first == "completed"
    assert (await load(deps, analysis.id)).attempts == 1


async def test_a_dead_runs_analysis_is_taken_over_once_its_lease_expires(
    deps: pipeline.PipelineDeps, redis: Redis
) -> None:
    """A killed run (kill -9, OOM) leaves its lease to expire: then the redelivery runs it."""
    analysis = await new_analysis(deps, status="processing", attempts=1)
    await redis.set(pipeline.lease_key(analysis.id), "1", px=300)

    assert await pipeline.run_analysis(deps, analysis.id) == "retry"
    assert (await load(deps, analysis.id)).attempts == 1

    await asyncio.sleep(0.4)
    assert await pipeline.run_analysis(deps, analysis.id) == "completed"
    assert (await load(deps, analysis.id)).attempts == 2


async def test_a_requeued_analysis_is_claimed_whatever_the_old_runs_lease(
    deps: pipeline.PipelineDeps, redis: Redis
) -> None:
    """The reaper takes a run past the deadline whatever its lease (it hangs): once it re-queued
    the analysis, the next message runs it even if the run it gave up on is alive and holds its
    lease."""
    analysis = await new_analysis(deps, status="queued", attempts=1)
    await redis.set(pipeline.lease_key(analysis.id), "1", ex=60)

    assert await pipeline.run_analysis(deps, analysis.id) == "completed"

    assert (await load(deps, analysis.id)).attempts == 2
    assert await redis.get(pipeline.lease_key(analysis.id)) is None  # freed when it ended
    events = await progress.read_events(redis, analysis.id)
    assert events[-1].event == "completed"


async def test_a_delivery_waits_while_another_is_claiming(
    deps: pipeline.PipelineDeps, redis: Redis
) -> None:
    """Two messages for one queued analysis: the one that took the free lease may take over a
    `processing` row, so the other must not claim meanwhile (it would start a run the first then
    takes over, spending an attempt: on the last one, failing it)."""
    analysis = await new_analysis(deps, status="queued", attempts=deps.max_attempts - 1)
    await redis.set(pipeline.lease_key(analysis.id), pipeline.CLAIMING, ex=60)

    assert await pipeline.run_analysis(deps, analysis.id) == "retry"

    row = await load(deps, analysis.id)
    assert (row.status, row.attempts) == ("queued", deps.max_attempts - 1)


async def test_a_live_run_takes_its_lease_back_when_redis_lost_it(
    deps: pipeline.PipelineDeps,
    redis: Redis,
    third_parties: FakeThirdParties,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pipeline, "LEASE_RENEW_SECONDS", 0.1)
    analysis = await new_analysis(deps)
    async with run_held_in_classify(deps, third_parties, analysis.id) as first:
        await redis.delete(pipeline.lease_key(analysis.id))  # a Redis restart without it
        await asyncio.sleep(0.5)

        assert await redis.get(pipeline.lease_key(analysis.id)) == "1"
        assert await pipeline.run_analysis(deps, analysis.id) == "retry"
    assert await first == "completed"
    assert (await load(deps, analysis.id)).attempts == 1


def test_a_broker_connection_loss_does_not_kill_the_running_task(settings: Settings) -> None:
    # Celery 6 turns it on by default: the run would die and the duplicate start it over.
    celery = configure_celery(settings)
    assert celery.conf.worker_cancel_long_running_tasks_on_connection_loss is False


async def test_a_live_run_outlasts_a_claim_that_came_to_nothing(
    deps: pipeline.PipelineDeps,
    redis: Redis,
    third_parties: FakeThirdParties,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its lease expired in a stall, a duplicate marked the key as claiming, then its database
    claim failed: once that mark expires, the live run must hold its lease again."""
    monkeypatch.setattr(pipeline, "LEASE_RENEW_SECONDS", 0.1)
    analysis = await new_analysis(deps)
    async with run_held_in_classify(deps, third_parties, analysis.id) as first:
        await redis.set(pipeline.lease_key(analysis.id), pipeline.CLAIMING, px=300)
        await asyncio.sleep(0.8)

        assert await redis.get(pipeline.lease_key(analysis.id)) == "1"
    assert await first == "completed"
