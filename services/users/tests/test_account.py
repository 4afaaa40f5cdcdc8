"""Export and deletion of a person's account."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from fastapi import FastAPI
from httpx import AsyncClient
from redis.asyncio import Redis
from sqlalchemy import select

from ecosort_common.events import Event
from ecosort_users.config import Settings
from ecosort_users.models import outbox

ME = "/api/v1/users/me"
Auth = Callable[[uuid.UUID], dict[str, str]]
Deliver = Callable[[Event], Awaitable[None]]
MakeEvent = Callable[..., Event]


def analysis(user_id: uuid.UUID, category: str = "glass_bottle") -> dict[str, object]:
    return {
        "analysis_id": str(uuid.uuid4()),
        "user_id": str(user_id),
        "category": category,
        "confidence": 0.8,
        "completed_at": datetime.now(UTC).isoformat(),
    }


async def test_export_holds_profile_history_and_stats(
    client: AsyncClient, auth: Auth, make_event: MakeEvent, apply_event: Deliver
) -> None:
    user_id = uuid.uuid4()
    await client.patch(ME, headers=auth(user_id), json={"nickname": "내보내기", "region": "11440"})
    for _ in range(2):
        await apply_event(make_event("analysis.completed", analysis(user_id)))
    response = await client.get(f"{ME}/export", headers=auth(user_id))
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    export = response.json()
    assert export["profile"]["nickname"] == "내보내기"
    assert export["profile"]["region"]["code"] == "11440"
    assert len(export["history"]) == 2
    assert export["stats"]["total_analyses"] == 2


async def _published_deletion(redis_url: str, user_id: uuid.UUID) -> bool:
    async with Redis.from_url(redis_url, decode_responses=True) as redis:
        for _ in range(50):
            entries = await redis.xrange("events:user.deleted")
            if any(json.loads(f["payload"]) == {"user_id": str(user_id)} for _, f in entries):
                return True
            await asyncio.sleep(0.1)
    return False


async def test_delete_erases_data_and_announces_user_deleted(
    client: AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Settings,
    make_event: MakeEvent,
    apply_event: Deliver,
) -> None:
    user_id, neighbour = uuid.uuid4(), uuid.uuid4()
    await apply_event(make_event("analysis.completed", analysis(user_id)))
    await apply_event(make_event("analysis.completed", analysis(neighbour)))

    response = await client.delete(ME, headers=auth(user_id))
    assert response.status_code == 204

    async with app.state.sessionmaker() as session:
        staged = (
            (
                await session.execute(
                    select(outbox.c.payload).where(outbox.c.event_type == "user.deleted")
                )
            )
            .scalars()
            .all()
        )
    assert {"user_id": str(user_id)} in staged
    assert await _published_deletion(settings.redis_url, user_id), "the relay never published"

    gone = await client.get(ME, headers=auth(user_id))
    assert gone.status_code == 410
    assert gone.headers["content-type"] == "application/problem+json"
    assert (await client.delete(ME, headers=auth(user_id))).status_code == 410
    # A late event for the deleted account must not bring it back.
    await apply_event(make_event("analysis.completed", analysis(user_id)))
    await apply_event(make_event("user.registered", {"user_id": str(user_id)}))
    assert (await client.get(f"{ME}/history", headers=auth(user_id))).status_code == 410
    # Nobody else's data was touched.
    stats = (await client.get(f"{ME}/stats", headers=auth(neighbour))).json()
    assert stats["total_analyses"] == 1
