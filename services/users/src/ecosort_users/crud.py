"""Data access of the users service: profiles, history, account deletion."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import and_, delete, exists, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ecosort_common.db import hold_account_lock, take_account_lock
from ecosort_common.events import USER_DELETED
from ecosort_common.outbox import add_event
from ecosort_common.pagination import Page, page_of, paginate
from ecosort_users.models import (
    AnalysisRecord,
    DeletedUser,
    PendingCorrection,
    Profile,
    outbox,
)
from ecosort_users.regions import Region
from ecosort_users.schemas import HistoryItem, PendingCorrectionItem

# The account's lock (ecosort_common.db) is held by every transaction creating the person's data
# (a profile, a history row, a correction kept for later) or changing the profile, and taken
# alone by its deletion. (A correction applied to the history only updates a row: it cannot
# bring back what a deletion removed.)
# An analysis's lock, taken after the account's: recording the analysis and keeping a correction
# of it for later exclude one another. Without it, a correction could look for the history row
# while the analysis's insert is not committed yet (not seen), and keep itself for later after
# the analysis looked for pending corrections (none yet): the correction would never be applied.
_LOCK_ANALYSIS = text("SELECT pg_advisory_xact_lock(hashtextextended('analysis:' || :id, 0))")
# A correction whose analysis never arrives (it failed) is deleted after this long.
PENDING_CORRECTION_RETENTION = timedelta(days=14)
_PRUNE_PENDING_BATCH = 100


async def is_deleted(session: AsyncSession, user_id: uuid.UUID) -> bool:
    return bool(await session.scalar(select(exists().where(DeletedUser.user_id == user_id))))


async def hold_account(session: AsyncSession, user_id: uuid.UUID) -> bool:
    """Until the transaction ends, the account cannot be deleted; False when it already was.
    Call it before creating any of the person's data or changing the profile."""
    # Its own statement: the tombstone check must read after the lock was granted.
    await hold_account_lock(session, user_id)
    return not await is_deleted(session, user_id)


async def _profile(session: AsyncSession, user_id: uuid.UUID) -> Profile | None:
    stmt = select(Profile).where(Profile.user_id == user_id)
    result = await session.execute(stmt, execution_options={"populate_existing": True})
    return result.scalar_one_or_none()


async def _create_profile(session: AsyncSession, user_id: uuid.UUID, locale: str) -> None:
    """The profile unless it exists (`hold_account` first). DO NOTHING writes nothing to an
    existing row, so concurrent creators do not queue on it."""
    await session.execute(
        insert(Profile).values(user_id=user_id, locale=locale).on_conflict_do_nothing()
    )


async def my_profile(session: AsyncSession, user_id: uuid.UUID, *, locale: str) -> Profile | None:
    """The person's profile, created on first use (the app may ask before auth's
    user.registered arrives); None when the account was deleted. Once it exists this only reads:
    every request of the person comes here."""
    profile = await _profile(session, user_id)
    if profile is not None:
        return profile
    if not await hold_account(session, user_id):
        return None
    await _create_profile(session, user_id, locale)
    return await _profile(session, user_id)


async def ensure_profile(session: AsyncSession, user_id: uuid.UUID, *, locale: str) -> bool:
    """Create the profile if it is missing, and hold the account (`hold_account`) for the
    transaction's further writes; False when the account was deleted."""
    if not await hold_account(session, user_id):
        return False
    await _create_profile(session, user_id, locale)
    return True


async def fill_profile(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    locale: str,
    nickname: str | None = None,
    provider: str | None = None,
    email: str | None = None,
) -> bool:
    """Create the profile if it is missing, or fill in what it lacks; never overwrite what the
    person chose (a lazily created profile may get its nickname from a late user.registered).
    False when the account was deleted."""
    if not await hold_account(session, user_id):
        return False
    stmt = insert(Profile).values(
        user_id=user_id,
        nickname=nickname[:30] if nickname else None,
        provider=provider,
        email=email,
        locale=locale,
    )
    fillable = (Profile.nickname, Profile.provider, Profile.email)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[Profile.user_id],
            # ON CONFLICT skips the column's `onupdate`: updated_at is set here, and only when
            # something is filled in (otherwise the row is left as it is, not rewritten).
            set_={
                **{
                    column.key: func.coalesce(column, stmt.excluded[column.key])
                    for column in fillable
                },
                "updated_at": func.now(),
            },
            where=or_(
                *(
                    and_(column.is_(None), stmt.excluded[column.key].is_not(None))
                    for column in fillable
                )
            ),
        )
    )
    return True


async def update_profile(
    session: AsyncSession,
    user_id: uuid.UUID,
    changes: dict[str, Any],
    region: Region | None,
    *,
    locale: str,
) -> Profile | None:
    """Apply PATCH /me's changes to the profile (created first if missing) and return it; None
    when the account was deleted. One statement under the account's lock: a deletion cannot
    come between reading the profile and changing it."""
    if not await hold_account(session, user_id):
        return None
    values: dict[str, Any] = {k: v for k, v in changes.items() if k in ("nickname", "locale")}
    if "region" in changes:
        values["region_code"] = region.code if region else None
        values["region_name"] = region.name if region else None
    if not values:
        await _create_profile(session, user_id, locale)
        return await _profile(session, user_id)
    stmt = insert(Profile).values({"user_id": user_id, "locale": locale, **values})
    upsert = stmt.on_conflict_do_update(
        index_elements=[Profile.user_id],
        set_={**{key: stmt.excluded[key] for key in values}, "updated_at": func.now()},
    ).returning(Profile)
    result = await session.execute(upsert, execution_options={"populate_existing": True})
    return result.scalar_one()


async def record_analysis(
    session: AsyncSession,
    *,
    analysis_id: uuid.UUID,
    user_id: uuid.UUID,
    category: str,
    confidence: float | None,
    completed_at: datetime,
) -> bool:
    """Add an analysis to the history (`hold_account` first), under the owner's correction when
    one arrived before it; False when it was already there."""
    await session.execute(_LOCK_ANALYSIS, {"id": str(analysis_id)})
    pending = (
        await session.execute(
            delete(PendingCorrection)
            .where(PendingCorrection.analysis_id == analysis_id)
            .returning(
                PendingCorrection.user_id,
                PendingCorrection.category,
                PendingCorrection.corrected_at,
            )
        )
    ).first()
    if pending is not None and pending.user_id != user_id:
        pending = None  # not the owner's: ignored, as correct_analysis ignores it
    inserted = await session.execute(
        insert(AnalysisRecord)
        .values(
            id=analysis_id,
            user_id=user_id,
            category=pending.category if pending else category,
            confidence=confidence,
            completed_at=completed_at,
            corrected_at=pending.corrected_at if pending else None,
        )
        .on_conflict_do_nothing(index_elements=[AnalysisRecord.id])
        .returning(AnalysisRecord.id)
    )
    if inserted.first() is not None:
        return True
    if pending is not None:  # already recorded (kept before this lock existed): apply it now
        await _apply_correction(
            session, analysis_id, user_id, pending.category, pending.corrected_at
        )
    return False


async def _apply_correction(
    session: AsyncSession,
    analysis_id: uuid.UUID,
    user_id: uuid.UUID,
    category: str,
    corrected_at: datetime,
) -> bool:
    record = AnalysisRecord
    updated = await session.execute(
        update(record)
        .where(
            record.id == analysis_id,
            record.user_id == user_id,
            or_(record.corrected_at.is_(None), record.corrected_at < corrected_at),
        )
        .values(category=category, corrected_at=corrected_at)
        .returning(record.id)
    )
    return updated.first() is not None


Correction = Literal["applied", "pending", "ignored"]


async def correct_analysis(
    session: AsyncSession,
    *,
    analysis_id: uuid.UUID,
    user_id: uuid.UUID,
    category: str,
    corrected_at: datetime,
) -> Correction:
    """Count an analysis of the history under the owner's correction, unless a correction made
    later was applied already (events arrive again, or out of order). An analysis not in the
    history yet (its `analysis.completed` comes on another stream, maybe after a redelivery) gets
    the correction when it is recorded: the newest is kept until then.

    "applied"; "pending" when kept for later; "ignored" when nothing changed: a later
    correction there already, the analysis someone else's, or the account deleted."""
    # Most corrections find their row: an UPDATE needs no lock (it cannot bring back a row the
    # account's deletion removed).
    if await _apply_correction(session, analysis_id, user_id, category, corrected_at):
        return "applied"
    if not await hold_account(session, user_id):
        return "ignored"
    await session.execute(_LOCK_ANALYSIS, {"id": str(analysis_id)})
    # Again, under the lock: the analysis may have been recorded in between.
    if await _apply_correction(session, analysis_id, user_id, category, corrected_at):
        return "applied"
    recorded = select(exists().where(AnalysisRecord.id == analysis_id))
    if await session.scalar(recorded):
        return "ignored"
    stmt = insert(PendingCorrection).values(
        analysis_id=analysis_id, user_id=user_id, category=category, corrected_at=corrected_at
    )
    kept = await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[PendingCorrection.analysis_id],
            set_={
                "user_id": stmt.excluded.user_id,
                "category": stmt.excluded.category,
                "corrected_at": stmt.excluded.corrected_at,
                "received_at": func.now(),
            },
            where=PendingCorrection.corrected_at < stmt.excluded.corrected_at,
        ).returning(PendingCorrection.analysis_id)
    )
    await _prune_pending_corrections(session)
    return "pending" if kept.first() is not None else "ignored"


async def _prune_pending_corrections(session: AsyncSession) -> None:
    """Delete a batch of corrections kept longer than PENDING_CORRECTION_RETENTION: their
    analyses failed. Done as corrections are kept, so the table stays as small as they are
    rare; rows another transaction holds are skipped, not waited for."""
    pending = PendingCorrection
    expired = (
        select(pending.analysis_id)
        .where(pending.received_at < func.now() - PENDING_CORRECTION_RETENTION)
        .limit(_PRUNE_PENDING_BATCH)
        .with_for_update(skip_locked=True)
    )
    await session.execute(delete(pending).where(pending.analysis_id.in_(expired.scalar_subquery())))


def _history_select(user_id: uuid.UUID) -> Any:
    # Labelled so the common cursor pagination (over `created_at`, `id`) pages by completion time.
    return select(
        AnalysisRecord.id,
        AnalysisRecord.category,
        AnalysisRecord.confidence,
        AnalysisRecord.completed_at.label("created_at"),
        AnalysisRecord.corrected_at,
    ).where(AnalysisRecord.user_id == user_id)


def _history_item(row: Any) -> HistoryItem:
    return HistoryItem(
        analysis_id=row.id,
        category=row.category,
        confidence=row.confidence,
        completed_at=row.created_at,
        corrected_at=row.corrected_at,
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


# Rows a round trip of the export's server-side cursor brings: ~140 kB of JSON.
EXPORT_BATCH = 1000


async def history_batches(
    session: AsyncSession, user_id: uuid.UUID
) -> AsyncIterator[list[dict[str, Any]]]:
    """The whole history, newest first, in batches of HistoryItem's fields, from a server-side
    cursor: an export holds one batch in memory, not the history (in the caller's transaction)."""
    stmt = (
        select(
            AnalysisRecord.id.label("analysis_id"),
            AnalysisRecord.category,
            AnalysisRecord.confidence,
            AnalysisRecord.completed_at,
            AnalysisRecord.corrected_at,
        )
        .where(AnalysisRecord.user_id == user_id)
        .order_by(AnalysisRecord.completed_at.desc(), AnalysisRecord.id.desc())
        .execution_options(yield_per=EXPORT_BATCH)
    )
    result = await session.stream(stmt)
    async for rows in result.mappings().partitions():
        yield [dict(row) for row in rows]


async def pending_corrections(
    session: AsyncSession, user_id: uuid.UUID
) -> list[PendingCorrectionItem]:
    """The person's corrections kept for analyses not in the history yet, newest first. Read at
    once: they are few (kept until their analysis arrives, at most
    PENDING_CORRECTION_RETENTION)."""
    pending = PendingCorrection
    rows = await session.execute(
        select(pending.analysis_id, pending.category, pending.corrected_at)
        .where(pending.user_id == user_id)
        .order_by(pending.corrected_at.desc(), pending.analysis_id.desc())
    )
    return [
        PendingCorrectionItem(
            analysis_id=row.analysis_id, category=row.category, corrected_at=row.corrected_at
        )
        for row in rows
    ]


async def delete_account(session: AsyncSession, user_id: uuid.UUID) -> bool:
    """Erase the person's data, leave a tombstone and announce `user.deleted`: all in the
    caller's transaction, so either everything happens or nothing does. False, and nothing done,
    when the account was already deleted. Waits for writers in flight to commit first."""
    await take_account_lock(session, user_id)
    if await is_deleted(session, user_id):
        return False
    await session.execute(delete(AnalysisRecord).where(AnalysisRecord.user_id == user_id))
    await session.execute(delete(PendingCorrection).where(PendingCorrection.user_id == user_id))
    await session.execute(delete(Profile).where(Profile.user_id == user_id))
    await session.execute(insert(DeletedUser).values(user_id=user_id))
    await add_event(session, outbox, USER_DELETED, {"user_id": str(user_id)})
    return True
