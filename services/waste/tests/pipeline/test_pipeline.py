"""pipeline.py in-process against real PostgreSQL, Redis and local storage: the stages, the
result contract, the outbox event, idempotency, supersession, retries and failures."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis.exceptions
from PIL import Image
from redis.asyncio import Redis
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ecosort_common.db import create_engine, create_sessionmaker
from ecosort_waste import pipeline, progress
from ecosort_waste.api.schemas import AnalysisResult
from ecosort_waste.classifier.base import Classification
from ecosort_waste.classifier.openai_provider import create_openai_classifier
from ecosort_waste.classifier.registry import ClassifierRegistry, registry_from_settings
from ecosort_waste.classifier.remote import CallBudget
from ecosort_waste.config import Settings
from ecosort_waste.guidance import GuidanceClient
from ecosort_waste.models import Analysis, outbox

from .conftest import FakeThirdParties, make_deps, photo_bytes

# The contract the API documents (test_openapi.py holds its field list).
RESULT_KEYS = set(AnalysisResult.model_fields)


async def new_analysis(deps: pipeline.PipelineDeps, *, store: bool = True, **values: Any) -> Any:
    data = photo_bytes()
    columns: dict[str, Any] = {
        "id": uuid.uuid4(),
        "owner_id": uuid.uuid4(),
        "status": "queued",
        "progress": 0,
        "image_key": f"analyses/{uuid.uuid4()}.jpg",
        "image_sha256": hashlib.sha256(data).hexdigest(),
    }
    analysis = Analysis(**(columns | values))
    if store:
        deps.storage.put(analysis.image_key, data, "image/jpeg")
    async with deps.sessionmaker() as session, session.begin():
        session.add(analysis)
    return analysis


async def load(deps: pipeline.PipelineDeps, analysis_id: uuid.UUID) -> Analysis:
    async with deps.sessionmaker() as session:
        row = await session.get(Analysis, analysis_id)
        assert row is not None
        return row


async def completed_events(deps: pipeline.PipelineDeps, analysis_id: uuid.UUID) -> list[Any]:
    async with deps.sessionmaker() as session:
        rows = await session.execute(
            select(outbox.c.event_type, outbox.c.payload).where(
                outbox.c.payload["analysis_id"].astext == str(analysis_id)
            )
        )
        return list(rows.all())


async def test_completes_through_the_stages_with_the_outbox_event(
    deps: pipeline.PipelineDeps, third_parties: FakeThirdParties
) -> None:
    analysis = await new_analysis(deps)

    assert await pipeline.run_analysis(deps, analysis.id) == "completed"

    row = await load(deps, analysis.id)
    assert (row.status, row.stage, row.progress, row.attempts) == ("completed", "save", 100, 1)
    assert row.completed_at is not None and row.error is None
    result = row.result
    assert result is not None and set(result) == RESULT_KEYS
    assert result["category"] == "can" and result["provider"] == "openai"
    assert result["model_version"] == "openai:gpt-4o-mini-2024-07-18"
    assert result["candidates"][0] == {"category": "can", "confidence": 0.86}
    assert result["guidance_available"] is True and result["guidance"]["code"] == "can"
    ((event_type, payload),) = await completed_events(deps, analysis.id)
    assert event_type == "analysis.completed"
    assert payload == {
        "analysis_id": str(analysis.id),
        "user_id": str(analysis.owner_id),
        "category": "can",
        "confidence": 0.86,
        "completed_at": row.completed_at.isoformat(),
    }
    events = await progress.read_events(deps.redis, analysis.id)
    assert [(e.event, e.data.get("stage")) for e in events] == [
        ("progress", "load"),
        ("progress", "classify"),
        ("progress", "guide"),
        ("progress", "save"),
        ("completed", "save"),
    ]
    assert [e.data["progress"] for e in events] == sorted(e.data["progress"] for e in events)
    assert events[-1].data == {
        "status": "completed",
        "stage": "save",
        "progress": 100,
        "result": result,
        "error": None,
    }
    state = await progress.read_state(deps.redis, analysis.id)
    assert state["status"] == "completed" and state["progress"] == "100"


async def test_a_finished_analysis_is_never_processed_again(
    deps: pipeline.PipelineDeps, third_parties: FakeThirdParties
) -> None:
    analysis = await new_analysis(deps)
    await pipeline.run_analysis(deps, analysis.id)
    calls = len(third_parties.chat_requests())

    assert await pipeline.run_analysis(deps, analysis.id) == "skipped"

    assert len(third_parties.chat_requests()) == calls
    assert (await load(deps, analysis.id)).attempts == 1
    assert len(await completed_events(deps, analysis.id)) == 1


async def test_a_lost_final_event_is_published_by_a_duplicate_delivery(
    deps: pipeline.PipelineDeps,
) -> None:
    analysis = await new_analysis(deps)
    await pipeline.run_analysis(deps, analysis.id)
    *_, lost = await progress.read_events(deps.redis, analysis.id)
    await deps.redis.delete(progress.state_key(analysis.id), progress.events_key(analysis.id))

    assert await pipeline.run_analysis(deps, analysis.id) == "skipped"

    (event,) = await progress.read_events(deps.redis, analysis.id)
    assert event.event == "completed" and event.data["result"]["category"] == "can"
    assert event.seq == lost.seq  # a client that saw the lost one is told to stop


async def test_recycling_down_still_completes_without_guidance(
    deps: pipeline.PipelineDeps, third_parties: FakeThirdParties
) -> None:
    third_parties.recycling_down = True
    analysis = await new_analysis(deps)

    assert await pipeline.run_analysis(deps, analysis.id) == "completed"

    result = (await load(deps, analysis.id)).result
    assert result is not None
    assert result["category"] == "can"
    assert result["guidance"] is None and result["guidance_available"] is False


async def test_a_failing_remote_provider_falls_back_to_the_local_model(
    deps: pipeline.PipelineDeps, third_parties: FakeThirdParties
) -> None:
    third_parties.openai_responses = [(500, {"error": {"message": "down"}})]
    analysis = await new_analysis(deps)

    assert await pipeline.run_analysis(deps, analysis.id) == "completed"

    result = (await load(deps, analysis.id)).result
    assert result is not None
    assert result["provider"] == "local"
    assert result["model_version"].startswith("efficientnet-lite0")
    assert result["head_version"]


async def test_a_remote_call_given_up_on_is_not_retried_and_the_photo_completes_locally(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    third_parties: FakeThirdParties,
) -> None:
    # OpenAI fails, but only after the deadline: a retry then would be billed and never read.
    third_parties.provider_delay_seconds = 2.0
    third_parties.openai_responses = [(500, {"error": {"message": "down"}})]
    settings.remote_classifier_deadline_seconds = 0.3
    settings.openai_max_retries = 2
    registry = registry_from_settings(settings)
    deps = make_deps(settings, sessionmaker, redis, registry)
    analysis = await new_analysis(deps)

    assert await pipeline.run_analysis(deps, analysis.id) == "completed"

    result = (await load(deps, analysis.id)).result
    assert result is not None and result["provider"] == "local"
    assert registry._remote_calls is not None
    await asyncio.to_thread(registry._remote_calls.shutdown, wait=True)  # the call has ended
    assert len(third_parties.chat_requests()) == 1


class BrokenLocal:
    name = "local"

    def classify(self, image: Image.Image) -> Classification:
        raise RuntimeError("cannot allocate memory for /app/.venv/lib/efficientnet-lite0.onnx")


def assert_user_safe(error: str | None, expected: str) -> None:
    """`analyses.error` reaches the app: our sentence, never an exception's text."""
    assert error == expected
    for internal in ("sk-proj", "10.0.3.7", "/app/", "analyses/", "allocate"):
        assert internal not in error


async def test_provider_errors_are_retried_then_fail_with_a_user_safe_reason(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    third_parties: FakeThirdParties,
) -> None:
    # What a provider's error can carry: a masked key, an internal address.
    reply = {"error": {"message": "Incorrect API key provided: sk-proj-****wXyZ via 10.0.3.7"}}
    third_parties.openai_responses = [(503, reply)]
    settings.analysis_max_attempts = 2
    registry = registry_from_settings(settings, local_loader=BrokenLocal)
    deps = make_deps(settings, sessionmaker, redis, registry)
    analysis = await new_analysis(deps)

    assert await pipeline.run_analysis(deps, analysis.id) == "retry"
    row = await load(deps, analysis.id)
    assert (row.status, row.attempts) == ("queued", 1)
    assert row.error is None  # waiting again is not a failure

    assert await pipeline.run_analysis(deps, analysis.id) == "failed"
    row = await load(deps, analysis.id)
    assert (row.status, row.attempts) == ("failed", 2)
    assert_user_safe(row.error, pipeline.CLASSIFIER_UNAVAILABLE)
    last = (await progress.read_events(redis, analysis.id))[-1]
    assert last.event == "failed"
    assert_user_safe(last.data["error"], pipeline.CLASSIFIER_UNAVAILABLE)
    # How far it got: the stream and the status read say the same.
    assert (last.data["stage"], last.data["progress"]) == (row.stage, row.progress)
    assert (row.stage, row.progress) == ("classify", pipeline.STAGE_PROGRESS["classify"])
    assert await completed_events(deps, analysis.id) == []


async def test_event_ids_go_on_after_redis_lost_the_progress(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    third_parties: FakeThirdParties,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis loses the analysis's hash and log (a restart without persistence, an eviction)
    between two runs, then between the second's commit and its final event: every id handed out
    after a loss is above the ones before it, which watchers have seen and resume after."""
    third_parties.openai_responses = [(503, {"error": {"message": "overloaded"}})]
    settings.analysis_max_attempts = 2
    registry = registry_from_settings(settings, local_loader=BrokenLocal)
    deps = make_deps(settings, sessionmaker, redis, registry)
    analysis = await new_analysis(deps)
    keys = (progress.state_key(analysis.id), progress.events_key(analysis.id))

    async def ids() -> list[int]:
        return [event.seq for event in await progress.read_events(redis, analysis.id)]

    assert await pipeline.run_analysis(deps, analysis.id) == "retry"
    first_run = await ids()
    await redis.delete(*keys)
    third_parties.openai_responses = []  # the provider is back
    save = pipeline._save
    second_run: list[int] = []

    async def redis_restarts_after_the_commit(
        deps: pipeline.PipelineDeps, claim: pipeline.Claim, result: dict[str, Any]
    ) -> None:
        await save(deps, claim, result)
        second_run.extend(await ids())
        await redis.delete(*keys)

    monkeypatch.setattr(pipeline, "_save", redis_restarts_after_the_commit)
    assert await pipeline.run_analysis(deps, analysis.id) == "completed"

    assert first_run == [1, 2, 10]  # load, classify, then queued for the second run
    assert second_run == [11, 12, 13, 14]  # its stages
    assert await ids() == [15]  # its end


async def test_a_failure_after_redis_lost_the_progress_follows_the_lost_ids(
    deps: pipeline.PipelineDeps,
) -> None:
    # The photo killed its worker on every run, and Redis restarted after the last one's stage.
    analysis = await new_analysis(deps, attempts=deps.max_attempts, status="processing")
    save = {"status": "processing", "stage": "save", "progress": 90}
    seen = await progress.publish_event(
        deps.redis, analysis.id, "progress", save, attempt=deps.max_attempts
    )
    await deps.redis.delete(progress.state_key(analysis.id), progress.events_key(analysis.id))

    assert await pipeline.run_analysis(deps, analysis.id) == "failed"

    (failed,) = await progress.read_events(deps.redis, analysis.id)
    assert failed.event == "failed" and failed.seq > seen


async def test_a_store_failing_mid_run_leaves_the_analysis_queued_not_processing(
    deps: pipeline.PipelineDeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis dropped at the guide stage: Celery's retry may be lost with the broker, so the
    analysis goes back to `queued`, which the reaper sends again within a minute, rather than
    sit in `processing` until the deadline (minutes) says its run is lost."""
    analysis = await new_analysis(deps)
    enter_stage = pipeline._enter_stage

    async def redis_drops_at_guide(
        deps: pipeline.PipelineDeps, claim: pipeline.Claim, stage: str
    ) -> None:
        if stage == "guide":
            raise redis.exceptions.ConnectionError("Connection reset by peer")
        await enter_stage(deps, claim, stage)

    monkeypatch.setattr(pipeline, "_enter_stage", redis_drops_at_guide)
    with pytest.raises(redis.exceptions.ConnectionError):
        await pipeline.run_analysis(deps, analysis.id)
    row = await load(deps, analysis.id)
    assert (row.status, row.attempts, row.error) == ("queued", 1, None)

    monkeypatch.setattr(pipeline, "_enter_stage", enter_stage)
    assert await pipeline.run_analysis(deps, analysis.id) == "completed"  # the next delivery


async def test_a_missing_image_fails_with_the_reason(deps: pipeline.PipelineDeps) -> None:
    analysis = await new_analysis(deps, store=False)

    assert await pipeline.run_analysis(deps, analysis.id) == "failed"

    row = await load(deps, analysis.id)
    assert row.status == "failed"
    assert_user_safe(row.error, pipeline.IMAGE_MISSING)
    last = (await progress.read_events(deps.redis, analysis.id))[-1]
    assert last.event == "failed"
    assert_user_safe(last.data["error"], pipeline.IMAGE_MISSING)
    assert set(last.data) == {"status", "stage", "progress", "result", "error"}


async def test_an_unreadable_image_fails_with_the_reason(deps: pipeline.PipelineDeps) -> None:
    analysis = await new_analysis(deps, store=False)
    deps.storage.put(analysis.image_key, b"\xff\xd8\xff\xe0 not a whole jpeg", "image/jpeg")

    assert await pipeline.run_analysis(deps, analysis.id) == "failed"

    row = await load(deps, analysis.id)
    assert row.status == "failed"
    assert_user_safe(row.error, pipeline.IMAGE_UNREADABLE)


async def test_too_many_attempts_fail_instead_of_looping(deps: pipeline.PipelineDeps) -> None:
    # As after a photo that kills its worker every time: each redelivery counted an attempt.
    analysis = await new_analysis(deps, attempts=deps.max_attempts, status="processing")

    assert await pipeline.run_analysis(deps, analysis.id) == "failed"

    row = await load(deps, analysis.id)
    assert row.status == "failed" and row.error is not None and "gave up" in row.error


async def test_a_failed_analysis_records_when_it_reached_its_final_state(
    deps: pipeline.PipelineDeps,
) -> None:
    """`completed_at` is when the analysis finished, whether it completed or failed: the app
    times both alike."""
    missing_photo = await new_analysis(deps, store=False)
    gave_up = await new_analysis(deps, attempts=deps.max_attempts, status="processing")
    for analysis in (missing_photo, gave_up):
        assert await pipeline.run_analysis(deps, analysis.id) == "failed"
        row = await load(deps, analysis.id)
        assert row.status == "failed"
        assert row.completed_at is not None and row.completed_at >= row.created_at
        assert row.completed_at == row.updated_at


class Usurper:
    """While this run classifies, the analysis is re-queued and claimed by another run."""

    name = "openai"

    def __init__(self, database_url: str, inner: Any) -> None:
        self.database_url = database_url
        self.inner = inner
        self.analysis_id: uuid.UUID | None = None

    def classify(self, image: Image.Image, budget: CallBudget) -> Classification:
        async def bump() -> None:
            engine = create_engine(self.database_url, pool_size=1)
            async with create_sessionmaker(engine)() as session, session.begin():
                await session.execute(
                    update(Analysis)
                    .where(Analysis.id == self.analysis_id)
                    .values(attempts=Analysis.attempts + 1)
                )
            await engine.dispose()

        asyncio.run(bump())  # runs in the pipeline's worker thread, so a loop of its own
        answer: Classification = self.inner.classify(image, budget)
        return answer


async def test_a_superseded_run_does_not_overwrite_the_newer_one(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    database_url: str,
    third_parties: FakeThirdParties,
) -> None:
    openai = create_openai_classifier(
        api_key="sk-test", model="gpt-4o-mini", base_url=f"{third_parties.url}/v1"
    )
    usurper = Usurper(database_url, openai)
    registry = ClassifierRegistry("openai", local_loader=BrokenLocal, remote=usurper)
    deps = make_deps(settings, sessionmaker, redis, registry)
    analysis = await new_analysis(deps)
    usurper.analysis_id = analysis.id

    assert await pipeline.run_analysis(deps, analysis.id) == "superseded"

    row = await load(deps, analysis.id)
    assert (row.status, row.attempts, row.result) == ("processing", 2, None)
    assert await completed_events(deps, analysis.id) == []


async def test_unknown_analysis_is_skipped(deps: pipeline.PipelineDeps) -> None:
    assert await pipeline.run_analysis(deps, uuid.uuid4()) == "skipped"


def nested_past_the_parser(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b"[" * 100_000 + b"]" * 100_000)


def client_bug(request: httpx.Request) -> httpx.Response:
    # What the guidance client did not foresee (as a RecursionError in its parsing was).
    raise RuntimeError("an error the guidance client does not handle")


@pytest.mark.parametrize("answer", [nested_past_the_parser, client_bug])
async def test_guidance_never_fails_an_analysis(
    deps: pipeline.PipelineDeps, answer: Callable[[httpx.Request], httpx.Response]
) -> None:
    deps.guidance = GuidanceClient(
        "http://recycling.test", httpx.AsyncClient(transport=httpx.MockTransport(answer))
    )
    analysis = await new_analysis(deps)

    assert await pipeline.run_analysis(deps, analysis.id) == "completed"

    row = await load(deps, analysis.id)
    assert (row.status, row.attempts) == ("completed", 1)
    assert row.result is not None and row.result["category"] == "can"
    assert row.result["guidance"] is None and row.result["guidance_available"] is False
    assert len(await completed_events(deps, analysis.id)) == 1
