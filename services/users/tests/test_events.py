"""Events through real Redis Streams, as the outbox relays publish them, seen through the API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from httpx import AsyncClient

from ecosort_common.events import Event
from ecosort_users.handlers import MalformedEvent

ME = "/api/v1/users/me"
Auth = Callable[[uuid.UUID], dict[str, str]]
Deliver = Callable[[Event], Awaitable[None]]


async def eventually(check: Callable[[], Awaitable[Any]], within_seconds: float = 10.0) -> Any:
    """Poll until check() returns something truthy (the consumer works in the background)."""
    deadline = asyncio.get_running_loop().time() + within_seconds
    while True:
        result = await check()
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.1)


def completed(
    user_id: uuid.UUID, category: str | None = "pet_clear", **extra: Any
) -> dict[str, Any]:
    return {
        "analysis_id": str(uuid.uuid4()),
        "user_id": str(user_id),
        "category": category,
        "confidence": 0.91,
        "completed_at": datetime.now(UTC).isoformat(),
        **extra,
    }


async def test_streamed_events_reach_profile_history_and_stats_once(
    client: AsyncClient, auth: Auth, make_event: Callable[..., Event], publish: Deliver
) -> None:
    user_id = uuid.uuid4()
    headers = auth(user_id)
    registered = make_event(
        "user.registered", {"user_id": str(user_id), "provider": "kakao", "nickname": "새싹"}
    )
    first = make_event("analysis.completed", completed(user_id, "pet_clear"))
    second = make_event("analysis.completed", completed(user_id, "can"))
    for ev in (registered, first, second, first):  # `first` delivered twice
        await publish(ev)

    async def two_in_history() -> Any:
        items = (await client.get(f"{ME}/history", headers=headers)).json()["items"]
        return items if len(items) >= 2 else None

    items = await eventually(two_in_history)
    assert items, "the consumer never applied the analysis.completed events"
    profile = (await client.get(ME, headers=headers)).json()
    assert (profile["nickname"], profile["provider"]) == ("새싹", "kakao")
    await asyncio.sleep(1.5)  # give the duplicate time to be (wrongly) applied
    stats = (await client.get(f"{ME}/stats", headers=headers)).json()
    assert stats["total_analyses"] == 2
    assert {c["category"]: c["count"] for c in stats["by_category"]} == {"pet_clear": 1, "can": 1}
    history = (await client.get(f"{ME}/history", headers=headers)).json()["items"]
    assert sorted(i["analysis_id"] for i in history) == sorted(
        [first.payload["analysis_id"], second.payload["analysis_id"]]
    )


async def test_analysis_before_registration_creates_the_profile_lazily(
    client: AsyncClient, auth: Auth, make_event: Callable[..., Event], apply_event: Deliver
) -> None:
    user_id = uuid.uuid4()
    await apply_event(make_event("analysis.completed", completed(user_id)))
    await apply_event(
        make_event(
            "user.registered", {"user_id": str(user_id), "provider": "naver", "nickname": "늦게"}
        ),
    )
    profile = (await client.get(ME, headers=auth(user_id))).json()
    assert profile["nickname"] == "늦게"
    assert (await client.get(f"{ME}/stats", headers=auth(user_id))).json()["total_analyses"] == 1


async def test_registration_does_not_overwrite_a_chosen_nickname(
    client: AsyncClient, auth: Auth, make_event: Callable[..., Event], apply_event: Deliver
) -> None:
    user_id = uuid.uuid4()
    await client.patch(ME, headers=auth(user_id), json={"nickname": "내가고른"})
    await apply_event(
        make_event("user.registered", {"user_id": str(user_id), "nickname": "provider"})
    )
    assert (await client.get(ME, headers=auth(user_id))).json()["nickname"] == "내가고른"


async def test_same_analysis_under_two_event_ids_is_recorded_once(
    client: AsyncClient, auth: Auth, make_event: Callable[..., Event], apply_event: Deliver
) -> None:
    user_id = uuid.uuid4()
    payload = completed(user_id)
    await apply_event(make_event("analysis.completed", payload))
    await apply_event(make_event("analysis.completed", payload))
    assert (await client.get(f"{ME}/stats", headers=auth(user_id))).json()["total_analyses"] == 1


async def test_missing_category_is_recorded_as_uncertain(
    client: AsyncClient, auth: Auth, make_event: Callable[..., Event], apply_event: Deliver
) -> None:
    user_id = uuid.uuid4()
    await apply_event(make_event("analysis.completed", completed(user_id, category=None)))
    items = (await client.get(f"{ME}/history", headers=auth(user_id))).json()["items"]
    assert [i["category"] for i in items] == ["uncertain"]


@pytest.mark.parametrize(
    "payload",
    [{"user_id": "not-a-uuid", "analysis_id": str(uuid.uuid4())}, {"user_id": str(uuid.uuid4())}],
)
async def test_malformed_events_are_refused_not_half_applied(
    make_event: Callable[..., Event], apply_event: Deliver, payload: dict[str, Any]
) -> None:
    with pytest.raises(MalformedEvent):
        await apply_event(make_event("analysis.completed", payload))
