"""Feedback with an OpenAI-compatible model configured: the production client (the `openai`
package) talks real HTTP to a local server replaying recorded Chat Completions bodies
(recordings/, see conftest.RecordedModelServer)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from httpx import AsyncClient
from redis.asyncio import Redis

PREFIX = "/api/v1/recycling"
# `model` (conftest): the local server replaying recordings; `model.requests` holds what the
# service sent it.
AuthHeaders = Callable[[], dict[str, str]]
BATTERY_QUESTION = {"category": "battery", "item": "보조배터리", "question": "어떻게 버려요?"}


async def ask(client: AsyncClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await client.post(f"{PREFIX}/feedback", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_a_grounded_answer_is_used_and_grounded_in_our_rules(
    llm_client: AsyncClient, redis: Redis, auth: AuthHeaders, model: Any
) -> None:
    model.replay("chat_completion_good_battery.json")
    body = await ask(llm_client, auth(), **BATTERY_QUESTION)
    assert body["source"] == "llm" and body["fallback_reason"] is None
    assert body["answer"].startswith("다 쓴 보조배터리는 폐건전지 수거함에")
    assert body["sources"], "the rules' sources travel with the model's wording"
    sent = model.requests[-1]
    assert sent["model"] == "test-model"
    assert sent["response_format"] == {"type": "json_object"}
    grounding = json.loads(sent["messages"][1]["content"])
    assert grounding["allowed_categories"] == ["battery"]
    assert grounding["rules"]["steps"], "the model is given the retrieved rules"
    assert int(await redis.get(next(iter(await redis.keys("recycling:llm-tokens:*"))))) == 976


@pytest.mark.parametrize(
    ("recording", "reason"),
    [
        ("chat_completion_hallucinated_category.json", "invalid_category"),
        ("chat_completion_contradicts_rule.json", "contradicts_rule"),
        ("chat_completion_not_json.json", "invalid_json"),
    ],
)
async def test_an_unusable_answer_falls_back_to_the_rules(
    llm_client: AsyncClient,
    redis: Redis,
    auth: AuthHeaders,
    model: Any,
    recording: str,
    reason: str,
) -> None:
    model.replay(recording)
    body = await ask(llm_client, auth(), **BATTERY_QUESTION)
    assert body["source"] == "rules" and body["fallback_reason"] == reason
    assert "폐건전지 수거함" in body["answer"]
    assert len(model.requests) == 1
    assert await redis.keys("recycling:feedback-answer:*") == [], "fallbacks are not cached"


async def test_a_timeout_falls_back_to_the_rules(
    llm_client: AsyncClient, redis: Redis, auth: AuthHeaders, model: Any
) -> None:
    model.replay("chat_completion_good_battery.json")
    model.reply.delay_seconds = 3.0  # llm_settings: 1 s timeout
    body = await ask(llm_client, auth(), **BATTERY_QUESTION)
    assert body["source"] == "rules" and body["fallback_reason"] == "timeout"
    assert len(model.requests) == 1, "no retries while a person waits"


async def test_a_server_error_falls_back_to_the_rules(
    llm_client: AsyncClient, redis: Redis, auth: AuthHeaders, model: Any
) -> None:
    model.respond(503, {"error": {"message": "overloaded", "type": "server_error"}})
    body = await ask(llm_client, auth(), **BATTERY_QUESTION)
    assert body["source"] == "rules" and body["fallback_reason"] == "error"


async def test_the_same_question_normalised_is_answered_from_the_cache(
    llm_client: AsyncClient, redis: Redis, auth: AuthHeaders, model: Any
) -> None:
    model.replay("chat_completion_good_battery.json")
    headers = auth()
    first = await ask(llm_client, headers, **BATTERY_QUESTION)
    again = await ask(
        llm_client, headers, category="battery", item="보조 배터리", question="어떻게  버려요"
    )
    assert len(model.requests) == 1
    assert first["cached"] is False and again["cached"] is True
    assert again["answer"] == first["answer"] and again["source"] == "llm"
    other = await ask(llm_client, headers, category="battery", item="건전지")
    assert len(model.requests) == 2 and other["cached"] is False


async def test_the_daily_token_budget_stops_model_calls(
    llm_client: AsyncClient, redis: Redis, auth: AuthHeaders, model: Any
) -> None:
    model.replay("chat_completion_good_battery.json")
    await redis.set(f"recycling:llm-tokens:{datetime.now(UTC):%Y%m%d}", 10_000)
    body = await ask(llm_client, auth(), **BATTERY_QUESTION)
    assert body["source"] == "rules" and body["fallback_reason"] == "budget_exhausted"
    assert len(model.requests) == 0


async def test_feedback_is_rate_limited_per_user(
    llm_client: AsyncClient, redis: Redis, auth: AuthHeaders, model: Any
) -> None:
    model.replay("chat_completion_good_battery.json")
    headers = auth()
    for _ in range(5):  # llm_settings: 5 a minute
        await ask(llm_client, headers, category="battery")
    limited = await llm_client.post(
        f"{PREFIX}/feedback", json={"category": "battery"}, headers=headers
    )
    assert limited.status_code == 429
    assert limited.headers["content-type"] == "application/problem+json"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert "Too many feedback requests" in limited.json()["detail"]
    assert await redis.keys("recycling:ratelimit:feedback:*")  # recycling's own keys
    someone_else = await llm_client.post(
        f"{PREFIX}/feedback", json={"category": "battery"}, headers=auth()
    )
    assert someone_else.status_code == 200
