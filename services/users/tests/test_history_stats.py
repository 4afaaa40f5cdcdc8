"""History paging and statistics over the real database."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text

from ecosort_common.events import Event
from ecosort_users.schemas import HistoryItem
from ecosort_users.stats import compute_stats, streaks

ME = "/api/v1/users/me"
Auth = Callable[[uuid.UUID], dict[str, str]]
Deliver = Callable[[Event], Awaitable[None]]
MakeEvent = Callable[..., Event]
ArriveAfter = Callable[[str, Event], Callable[[], bool]]


def completed_at(when: datetime, user_id: uuid.UUID, category: str) -> dict[str, str]:
    return {
        "analysis_id": str(uuid.uuid4()),
        "user_id": str(user_id),
        "category": category,
        "completed_at": when.isoformat(),
    }


async def test_history_pages_newest_first_without_gaps_or_repeats(
    client: AsyncClient, auth: Auth, make_event: MakeEvent, apply_event: Deliver
) -> None:
    user_id = uuid.uuid4()
    start = datetime(2026, 3, 1, tzinfo=UTC)
    for i in range(7):  # two share a timestamp: the id breaks the tie
        when = start + timedelta(hours=min(i, 5))
        await apply_event(make_event("analysis.completed", completed_at(when, user_id, "paper")))
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"{ME}/history", headers=auth(user_id), params=params)).json()
        seen += [item["completed_at"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages == 3 and len(seen) == 7
    assert seen == sorted(seen, reverse=True)
    other = (await client.get(f"{ME}/history", headers=auth(uuid.uuid4()))).json()
    assert other == {"items": [], "next_cursor": None}


async def test_a_history_item_is_read_from_the_covering_index_alone(app: FastAPI) -> None:
    """The history's pages and the export read a person's rows from the index, in its order: a
    field missing from it sends them to the table, and the export to a sort (100k analyses: it
    spilled to disk)."""
    indexed = text(
        "SELECT a.attname FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE c.relname = 'ix_analysis_history_user_completed_covering'"
    )
    async with app.state.sessionmaker() as session:
        columns = set((await session.scalars(indexed)).all())
    read = {"id" if field == "analysis_id" else field for field in HistoryItem.model_fields}
    assert read | {"user_id"} <= columns


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"cursor": "garbage!"}])
async def test_bad_history_parameters_are_problems(
    client: AsyncClient, auth: Auth, params: dict[str, Any]
) -> None:
    response = await client.get(f"{ME}/history", headers=auth(uuid.uuid4()), params=params)
    assert response.status_code in (400, 422)
    assert response.headers["content-type"] == "application/problem+json"


def test_streaks_count_consecutive_local_days() -> None:
    d = date(2026, 5, 10)
    days = [d, d - timedelta(1), d - timedelta(2), d - timedelta(5), d - timedelta(6)]
    assert streaks(days, today=d) == (3, 3)
    assert streaks(days, today=d + timedelta(1)) == (3, 3)  # yesterday still counts
    assert streaks(days, today=d + timedelta(2)) == (0, 3)
    assert streaks([], today=d) == (0, 0)


async def test_stats_count_per_category_month_and_korean_days(
    app: FastAPI, make_event: MakeEvent, apply_event: Deliver
) -> None:
    user_id = uuid.uuid4()
    # 15:30 UTC is 00:30 the next day in Seoul: the three analyses fall on 3 Seoul days.
    for when, category in [
        (datetime(2026, 4, 30, 14, 0, tzinfo=UTC), "can"),  # 4-30 23:00 KST, last month
        (datetime(2026, 4, 30, 15, 30, tzinfo=UTC), "can"),  # 5-01 00:30 KST
        (datetime(2026, 5, 1, 16, 0, tzinfo=UTC), "paper"),  # 5-02 01:00 KST
    ]:
        await apply_event(make_event("analysis.completed", completed_at(when, user_id, category)))
    async with app.state.sessionmaker() as session:
        stats = await compute_stats(
            session,
            user_id,
            timezone="Asia/Seoul",
            now=datetime(2026, 5, 2, 3, 0, tzinfo=UTC),  # 5-02 12:00 KST
        )
    assert stats.total_analyses == 3
    assert [(c.category, c.count) for c in stats.by_category] == [("can", 2), ("paper", 1)]
    assert (stats.this_month, stats.today) == (2, 1)
    assert (stats.current_streak_days, stats.longest_streak_days, stats.active_days) == (3, 3, 3)
    assert stats.as_of == date(2026, 5, 2)


async def test_stats_endpoint_of_a_new_person_is_all_zero(client: AsyncClient, auth: Auth) -> None:
    stats = (await client.get(f"{ME}/stats", headers=auth(uuid.uuid4()))).json()
    assert stats["total_analyses"] == 0 and stats["by_category"] == []
    assert stats["current_streak_days"] == 0 and stats["last_analysis_at"] is None
    assert stats["timezone"] == "Asia/Seoul"


async def test_stats_read_one_snapshot_of_the_history(
    client: AsyncClient,
    auth: Auth,
    make_event: MakeEvent,
    apply_event: Deliver,
    arrive_after: ArriveAfter,
) -> None:
    """An analysis recorded while GET /me/stats runs its queries is counted by all of them or by
    none: the totals, the categories and the days describe the same history."""
    user_id = uuid.uuid4()
    now = datetime.now(UTC)
    await apply_event(make_event("analysis.completed", completed_at(now, user_id, "can")))
    # Right after the per-category counts: the next analysis commits.
    arrived = arrive_after(
        "GROUP BY analysis_history.category",
        make_event("analysis.completed", completed_at(now, user_id, "pet")),
    )
    stats = (await client.get(f"{ME}/stats", headers=auth(user_id))).json()
    assert arrived()
    assert stats["total_analyses"] == sum(c["count"] for c in stats["by_category"]) == 1
    assert stats["today"] == 1
