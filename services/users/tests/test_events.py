"""Events through real Redis Streams, as the outbox relays publish them, seen through the API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, select, update

from ecosort_common.events import Event
from ecosort_users import crud, handlers
from ecosort_users.handlers import MalformedEvent
from ecosort_users.models import AnalysisRecord, PendingCorrection, Profile

ME = "/api/v1/users/me"
_SECOND = timedelta(seconds=1)
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


async def test_registration_filling_a_profile_moves_updated_at(
    client: AsyncClient, auth: Auth, make_event: Callable[..., Event], apply_event: Deliver
) -> None:
    user_id = uuid.uuid4()
    created = (await client.get(ME, headers=auth(user_id))).json()
    registered = {"user_id": str(user_id), "provider": "kakao", "nickname": "늦게"}
    await apply_event(make_event("user.registered", registered))
    filled = (await client.get(ME, headers=auth(user_id))).json()
    assert filled["nickname"] == "늦게"
    assert filled["updated_at"] > created["updated_at"]
    # Again, under another event id: nothing left to fill, nothing changes.
    await apply_event(make_event("user.registered", registered))
    assert (await client.get(ME, headers=auth(user_id))).json() == filled


class _Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def error(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


async def test_a_malformed_event_is_logged_without_its_content(
    make_event: Callable[..., Event], apply_event: Deliver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log line is written at every redelivery: what was sent may be personal data."""
    recorder = _Recorder()
    monkeypatch.setattr(handlers, "log", recorder)
    email = "hong.gildong@example.com" + "m" * 320
    with pytest.raises(MalformedEvent):
        await apply_event(make_event("user.registered", {"user_id": "x", "email": email}))
    [(event, fields)] = recorder.lines
    assert event == "malformed_event"
    assert fields["errors"] == [
        {"loc": ("user_id",), "type": "uuid_parsing"},
        {"loc": ("email",), "type": "string_too_long"},
    ]
    assert "hong.gildong" not in repr(fields)


def corrected(
    analysis: dict[str, Any], category: str, at: datetime, **extra: Any
) -> dict[str, Any]:
    return {
        "analysis_id": analysis["analysis_id"],
        "user_id": analysis["user_id"],
        "category": category,
        "corrected_at": at.isoformat(),
        **extra,
    }


async def _history(
    client: AsyncClient, headers: dict[str, str]
) -> dict[str, tuple[str, datetime | None]]:
    """Each analysis of the history: its category, and when the owner corrected it."""
    items = (await client.get(f"{ME}/history", headers=headers)).json()["items"]
    return {
        i["analysis_id"]: (
            i["category"],
            datetime.fromisoformat(i["corrected_at"]) if i["corrected_at"] else None,
        )
        for i in items
    }


async def _categories(client: AsyncClient, headers: dict[str, str]) -> dict[str, int]:
    stats = (await client.get(f"{ME}/stats", headers=headers)).json()
    return {c["category"]: c["count"] for c in stats["by_category"]}


async def test_a_correction_counts_the_analysis_under_the_newest_category(
    client: AsyncClient, auth: Auth, make_event: Callable[..., Event], apply_event: Deliver
) -> None:
    user_id = uuid.uuid4()
    headers = auth(user_id)
    wrong, right = completed(user_id, "pet_clear"), completed(user_id, "can")
    for payload in (wrong, right):
        await apply_event(make_event("analysis.completed", payload))
    at = datetime.now(UTC)
    first = make_event("analysis.corrected", corrected(wrong, "vinyl", at))
    await apply_event(first)
    assert await _history(client, headers) == {
        wrong["analysis_id"]: ("vinyl", at),
        right["analysis_id"]: ("can", None),
    }
    assert await _categories(client, headers) == {"vinyl": 1, "can": 1}
    # An older correction arriving late, and the same one under another event id, change
    # nothing; a newer one wins.
    await apply_event(make_event("analysis.corrected", corrected(wrong, "paper", at - _SECOND)))
    await apply_event(make_event("analysis.corrected", first.payload))
    assert await _categories(client, headers) == {"vinyl": 1, "can": 1}
    await apply_event(make_event("analysis.corrected", corrected(wrong, "general", at + _SECOND)))
    assert await _categories(client, headers) == {"general": 1, "can": 1}
    assert (await _history(client, headers))[wrong["analysis_id"]] == ("general", at + _SECOND)


async def test_a_correction_of_a_deleted_account_is_ignored(
    client: AsyncClient,
    auth: Auth,
    app: FastAPI,
    make_event: Callable[..., Event],
    apply_event: Deliver,
) -> None:
    deleted, deleted_first = uuid.uuid4(), uuid.uuid4()
    analysis = completed(deleted)
    await apply_event(make_event("analysis.completed", analysis))
    assert (await client.delete(ME, headers=auth(deleted))).status_code == 204
    assert (await client.delete(ME, headers=auth(deleted_first))).status_code == 204
    now = datetime.now(UTC)
    await apply_event(make_event("analysis.corrected", corrected(analysis, "can", now)))
    # Nor kept for an analysis that could only arrive for a deleted account.
    await apply_event(
        make_event("analysis.corrected", corrected(completed(deleted_first), "can", now))
    )
    async with app.state.sessionmaker() as session:
        for user_id in (deleted, deleted_first):
            for table in (Profile, AnalysisRecord, PendingCorrection):
                mine = select(func.count()).select_from(table).where(table.user_id == user_id)
                assert await session.scalar(mine) == 0


@pytest.mark.parametrize(
    "change",
    [
        {"category": None},
        {"category": ""},
        {"corrected_at": "2026-11-28T09:00:00"},  # no offset: when was that?
        {"corrected_at": None},
        {"user_id": "not-a-uuid"},
    ],
)
async def test_malformed_corrections_are_refused(
    make_event: Callable[..., Event], apply_event: Deliver, change: dict[str, Any]
) -> None:
    payload = corrected(completed(uuid.uuid4()), "can", datetime.now(UTC)) | change
    with pytest.raises(MalformedEvent):
        await apply_event(make_event("analysis.corrected", payload))


async def test_streamed_corrections_reach_the_history(
    client: AsyncClient, auth: Auth, make_event: Callable[..., Event], publish: Deliver
) -> None:
    user_id = uuid.uuid4()
    headers = auth(user_id)
    analysis = completed(user_id, "pet_clear")

    async def history_reads(categories: list[str]) -> bool:
        items = (await client.get(f"{ME}/history", headers=headers)).json()["items"]
        return [i["category"] for i in items] == categories

    await publish(make_event("analysis.completed", analysis))
    assert await eventually(lambda: history_reads(["pet_clear"]))
    await publish(make_event("analysis.corrected", corrected(analysis, "can", datetime.now(UTC))))
    assert await eventually(lambda: history_reads(["can"])), "the correction was never applied"


async def _pending(app: FastAPI, user_id: uuid.UUID) -> list[tuple[str, str]]:
    async with app.state.sessionmaker() as session:
        rows = await session.execute(
            select(PendingCorrection.analysis_id, PendingCorrection.category).where(
                PendingCorrection.user_id == user_id
            )
        )
        return [(str(analysis_id), category) for analysis_id, category in rows]


@pytest.mark.parametrize("correction_first", [True, False], ids=["corrected-first", "in-order"])
async def test_a_correction_counts_whichever_event_arrives_first(
    client: AsyncClient,
    auth: Auth,
    app: FastAPI,
    make_event: Callable[..., Event],
    apply_event: Deliver,
    correction_first: bool,
) -> None:
    """analysis.corrected and analysis.completed travel on different streams: a completed event
    waiting for its redelivery lets the correction through first."""
    user_id = uuid.uuid4()
    headers = auth(user_id)
    analysis = completed(user_id, "pet_clear")
    at = datetime.now(UTC)
    fix = make_event("analysis.corrected", corrected(analysis, "can", at))
    older = make_event("analysis.corrected", corrected(analysis, "paper", at - _SECOND))
    done = make_event("analysis.completed", analysis)
    events = [fix, fix, older, done] if correction_first else [done, fix, fix, older]
    for ev in events:  # the correction redelivered, an older one arriving late
        await apply_event(ev)
    await apply_event(done)  # and the analysis redelivered
    items = (await client.get(f"{ME}/history", headers=headers)).json()["items"]
    assert [(i["analysis_id"], i["category"]) for i in items] == [(analysis["analysis_id"], "can")]
    assert await _categories(client, headers) == {"can": 1}
    assert await _pending(app, user_id) == []
    # The correction was recorded as one: an older one still changes nothing, a newer one wins.
    await apply_event(make_event("analysis.corrected", older.payload))
    assert await _categories(client, headers) == {"can": 1}
    await apply_event(make_event("analysis.corrected", corrected(analysis, "vinyl", at + _SECOND)))
    assert await _categories(client, headers) == {"vinyl": 1}


async def test_a_pending_correction_keeps_the_newest(
    client: AsyncClient,
    auth: Auth,
    app: FastAPI,
    make_event: Callable[..., Event],
    apply_event: Deliver,
) -> None:
    user_id = uuid.uuid4()
    analysis = completed(user_id, "pet_clear")
    at = datetime.now(UTC)
    for category, when in [("paper", at), ("can", at + _SECOND), ("vinyl", at - _SECOND)]:
        await apply_event(make_event("analysis.corrected", corrected(analysis, category, when)))
    assert await _pending(app, user_id) == [(analysis["analysis_id"], "can")]
    await apply_event(make_event("analysis.completed", analysis))
    assert await _categories(client, auth(user_id)) == {"can": 1}
    assert await _pending(app, user_id) == []


@pytest.mark.parametrize("correction_first", [True, False], ids=["corrected-first", "in-order"])
async def test_a_correction_racing_its_analysis_is_applied(
    client: AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Any,
    make_event: Callable[..., Event],
    apply_event: Deliver,
    correction_first: bool,
) -> None:
    """One event's transaction still open while the other is handled: the second must wait for
    it, or the correction would look for an uncommitted row (or the analysis for an uncommitted
    pending correction) and miss it."""
    user_id = uuid.uuid4()
    analysis = completed(user_id, "pet_clear")
    fix = make_event("analysis.corrected", corrected(analysis, "can", datetime.now(UTC)))
    done = make_event("analysis.completed", analysis)
    first, second = (fix, done) if correction_first else (done, fix)
    on = handlers.event_handlers(settings)
    async with app.state.sessionmaker() as session, session.begin():
        await on[first.type](session, first)
        racing = asyncio.create_task(apply_event(second))
        await asyncio.sleep(0.5)  # the second event's handler meets this open transaction
    await asyncio.wait_for(racing, 10)
    assert await _categories(client, auth(user_id)) == {"can": 1}
    assert await _pending(app, user_id) == []


async def test_pending_corrections_go_with_the_account_and_in_time(
    client: AsyncClient,
    auth: Auth,
    app: FastAPI,
    make_event: Callable[..., Event],
    apply_event: Deliver,
) -> None:
    gone, failed, recent = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    for user_id in (gone, failed, recent):
        await apply_event(
            make_event("analysis.corrected", corrected(completed(user_id), "can", now))
        )
    assert (await client.delete(ME, headers=auth(gone))).status_code == 204
    assert await _pending(app, gone) == []
    # `failed`'s analysis never completes: once kept long enough, the next kept one prunes it.
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(PendingCorrection)
            .where(PendingCorrection.user_id == failed)
            .values(received_at=func.now() - crud.PENDING_CORRECTION_RETENTION - _SECOND)
        )
    await apply_event(make_event("analysis.corrected", corrected(completed(recent), "can", now)))
    assert await _pending(app, failed) == []
    assert len(await _pending(app, recent)) == 2
