"""Data access of the users service: profiles, history, account deletion."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ecosort_common.outbox import add_event
from ecosort_common.pagination import Page, page_of, paginate
from ecosort_users.models import AnalysisRecord, DeletedUser, Profile, outbox
from ecosort_users.regions import Region
from ecosort_users.schemas import HistoryItem

USER_DELETED = "user.deleted"


async def is_deleted(session: AsyncSession, user_id: uuid.UUID) -> bool:
    return bool(await session.scalar(select(exists().where(DeletedUser.user_id == user_id))))


async def upsert_profile(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    locale: str,
    nickname: str | None = None,
    provider: str | None = None,
    email: str | None = None,
) -> Profile | None:
    """Create the profile if it is missing, or fill in what it lacks; never overwrite what the
    person chose (a lazily created profile may get its nickname from a late user.registered).
    None when the account was deleted."""
    if await is_deleted(session, user_id):
        return None
    stmt = insert(Profile).values(
        user_id=user_id,
        nickname=nickname[:30] if nickname else None,
        provider=provider,
        email=email,
        locale=locale,
    )
    upsert = stmt.on_conflict_do_update(
        index_elements=[Profile.user_id],
        set_={
            "nickname": func.coalesce(Profile.nickname, stmt.excluded.nickname),
            "provider": func.coalesce(Profile.provider, stmt.excluded.provider),
            "email": func.coalesce(Profile.email, stmt.excluded.email),
        },
    ).returning(Profile)
    result = await session.execute(upsert, execution_options={"populate_existing": True})
    return result.scalar_one()


async def update_profile(
    session: AsyncSession, profile: Profile, changes: dict[str, Any], region: Region | None
) -> Profile:
    values: dict[str, Any] = {k: v for k, v in changes.items() if k in ("nickname", "locale")}
    if "region" in changes:
        values["region_code"] = region.code if region else None
        values["region_name"] = region.name if region else None
    if values:
        await session.execute(
            update(Profile).where(Profile.user_id == profile.user_id).values(**values)
        )
        await session.refresh(profile)
    return profile


async def record_analysis(
    session: AsyncSession,
    *,
    analysis_id: uuid.UUID,
    user_id: uuid.UUID,
    category: str,
    confidence: float | None,
    completed_at: datetime,
) -> bool:
    """Add an analysis to the history; False when it was already there."""
    inserted = await session.execute(
        insert(AnalysisRecord)
        .values(
            id=analysis_id,
            user_id=user_id,
            category=category,
            confidence=confidence,
            completed_at=completed_at,
        )
        .on_conflict_do_nothing(index_elements=[AnalysisRecord.id])
        .returning(AnalysisRecord.id)
    )
    return inserted.first() is not None


def _history_select(user_id: uuid.UUID) -> Any:
    # Labelled so the common cursor pagination (over `created_at`, `id`) pages by completion time.
    return select(
        AnalysisRecord.id,
        AnalysisRecord.category,
        AnalysisRecord.confidence,
        AnalysisRecord.completed_at.label("created_at"),
    ).where(AnalysisRecord.user_id == user_id)


def _history_item(row: Any) -> HistoryItem:
    return HistoryItem(
        analysis_id=row.id,
        category=row.category,
        confidence=row.confidence,
        completed_at=row.created_at,
    )


async def history_page(
    session: AsyncSession, user_id: uuid.UUID, *, cursor: str | None, limit: int
) -> Page[Any]:
    stmt = paginate(
        _history_select(user_id),
        AnalysisRecord.completed_at,
        AnalysisRecord.id,
        cursor=cursor,
        limit=limit,
    )
    rows = list((await session.execute(stmt)).all())
    return page_of(rows, limit, _history_item)


async def full_history(session: AsyncSession, user_id: uuid.UUID) -> list[HistoryItem]:
    stmt = _history_select(user_id).order_by(
        AnalysisRecord.completed_at.desc(), AnalysisRecord.id.desc()
    )
    return [_history_item(row) for row in (await session.execute(stmt)).all()]


async def delete_account(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Erase the person's data, leave a tombstone and announce `user.deleted`: all in the
    caller's transaction, so either everything happens or nothing does."""
    await session.execute(delete(AnalysisRecord).where(AnalysisRecord.user_id == user_id))
    await session.execute(delete(Profile).where(Profile.user_id == user_id))
    await session.execute(insert(DeletedUser).values(user_id=user_id).on_conflict_do_nothing())
    await add_event(session, outbox, USER_DELETED, {"user_id": str(user_id)})
