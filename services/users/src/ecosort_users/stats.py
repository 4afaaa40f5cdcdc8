"""Statistics of a person's history, computed from it in SQL (always consistent with it)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from sqlalchemy import Date, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ecosort_users.models import AnalysisRecord
from ecosort_users.schemas import CategoryCount, StatsOut


def streaks(days_descending: list[date], today: date) -> tuple[int, int]:
    """(current, longest) runs of consecutive days. The current run may end yesterday: a
    streak is not broken until a whole day passes without an analysis."""
    longest = run = 0
    previous: date | None = None
    for day in days_descending:
        run = run + 1 if previous is not None and previous - day == timedelta(days=1) else 1
        longest = max(longest, run)
        previous = day
    current = 0
    if days_descending and today - days_descending[0] <= timedelta(days=1):
        current = 1
        for newer, older in pairwise(days_descending):
            if newer - older != timedelta(days=1):
                break
            current += 1
    return current, longest


async def compute_stats(
    session: AsyncSession, user_id: uuid.UUID, *, timezone: str, now: datetime
) -> StatsOut:
    zone = ZoneInfo(timezone)
    local_now = now.astimezone(zone)
    today = local_now.date()
    month_start = local_now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    day_start = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
    mine = AnalysisRecord.user_id == user_id
    record = AnalysisRecord

    per_category = (
        await session.execute(
            select(record.category, func.count().label("n"))
            .where(mine)
            .group_by(record.category)
            .order_by(func.count().desc(), record.category)
        )
    ).all()
    totals = (
        await session.execute(
            select(
                func.count(),
                func.count().filter(record.completed_at >= month_start),
                func.count().filter(record.completed_at >= day_start),
                func.min(record.completed_at),
                func.max(record.completed_at),
            ).where(mine)
        )
    ).one()
    local_day = cast(func.timezone(timezone, record.completed_at), Date)
    days = list(
        (
            await session.scalars(
                select(local_day).where(mine).group_by(local_day).order_by(local_day.desc())
            )
        ).all()
    )
    current, longest = streaks(days, today)
    return StatsOut(
        total_analyses=totals[0],
        by_category=[CategoryCount(category=c, count=n) for c, n in per_category],
        this_month=totals[1],
        today=totals[2],
        current_streak_days=current,
        longest_streak_days=longest,
        active_days=len(days),
        first_analysis_at=totals[3],
        last_analysis_at=totals[4],
        timezone=timezone,
        as_of=today,
    )
