"""Data access for analyses and corrections."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Row, delete, exists, literal, literal_column, or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ecosort_common.db import ACCOUNT_LOCK_KEY, take_account_lock
from ecosort_common.events import ANALYSIS_CORRECTED
from ecosort_common.outbox import add_event
from ecosort_common.pagination import Page, page_of, paginate
from ecosort_waste.models import Analysis, Correction, DeletedUser, analyses, outbox


async def get_owned(
    session: AsyncSession, analysis_id: uuid.UUID, owner_id: uuid.UUID, *, keep: bool = False
) -> Analysis | None:
    """The analysis if ``owner_id`` owns it; someone else's is as good as missing.

    ``keep``: until the transaction ends, the row cannot be deleted (the owner's account
    removed), so a correction written in it still finds its analysis."""
    stmt = select(Analysis).where(Analysis.id == analysis_id, Analysis.owner_id == owner_id)
    if keep:
        stmt = stmt.with_for_update(key_share=True)
    return (await session.execute(stmt)).scalar_one_or_none()


async def owned_status(
    session: AsyncSession, analysis_id: uuid.UUID, owner_id: uuid.UUID
) -> str | None:
    """The analysis's status if ``owner_id`` owns it (None otherwise), without loading the row:
    every event stream starts with this check."""
    stmt = select(analyses.c.status).where(
        analyses.c.id == analysis_id, analyses.c.owner_id == owner_id
    )
    status: str | None = (await session.execute(stmt)).scalar_one_or_none()
    return status


async def find_earlier(
    session: AsyncSession, owner_id: uuid.UUID, key: str | None, upload_id: uuid.UUID | None
) -> list[Analysis]:
    """The owner's analyses made with this idempotency key or from this upload (two at most).

    One statement, so one snapshot: asked one after the other, a request committing in between
    could be missed by the first question and seen by the second.
    """
    made_by = [
        *([Analysis.idempotency_key == key] if key is not None else []),
        *([Analysis.upload_id == upload_id] if upload_id is not None else []),
    ]
    if not made_by:
        return []
    stmt = select(Analysis).where(Analysis.owner_id == owner_id, or_(*made_by))
    return list((await session.execute(stmt)).scalars())


# A key's lock and the account's (ecosort_common.db) in one statement: one round trip fewer on
# the upload path.
_LOCK_KEY_AND_HOLD_ACCOUNT = text(
    f"SELECT pg_advisory_xact_lock(hashtextextended(:name, 0)), "
    f"pg_advisory_xact_lock_shared({ACCOUNT_LOCK_KEY})"
)


async def lock_idempotency_key(session: AsyncSession, owner_id: uuid.UUID, key: str) -> None:
    """Wait for, then hold until the transaction ends, the one lock of (owner, key), and the
    owner's account lock (`ecosort_common.db.hold_account_lock`)."""
    await session.execute(
        _LOCK_KEY_AND_HOLD_ACCOUNT,
        {"name": f"idempotency-key:{owner_id}:{key}", "account": str(owner_id)},
    )


async def delete_account(session: AsyncSession, user_id: uuid.UUID) -> int:
    """Leave the account's tombstone and delete its analyses (corrections go with them); the
    number deleted. Waits for creations in flight to commit first."""
    await take_account_lock(session, user_id)
    await session.execute(insert(DeletedUser).values(user_id=user_id).on_conflict_do_nothing())
    deleted = await session.execute(
        delete(Analysis).where(Analysis.owner_id == user_id).returning(Analysis.id)
    )
    return len(deleted.all())


async def is_deleted(session: AsyncSession, user_id: uuid.UUID) -> bool:
    return bool(await session.scalar(select(exists().where(DeletedUser.user_id == user_id))))


async def insert_analysis(
    session: AsyncSession,
    *,
    owner_id: uuid.UUID,
    image_key: str,
    image_sha256: str,
    idempotency_key: str | None,
    request_hash: str | None,
    upload_id: uuid.UUID | None,
) -> uuid.UUID | None:
    """Insert a queued analysis; None when (owner, idempotency key) or the upload id is taken,
    or the owner's account was deleted (`hold_account_lock` first).

    ON CONFLICT DO NOTHING makes the database the arbiter: of any number of concurrent inserts
    with one key, or from one upload, exactly one succeeds; the others wait for it to commit and
    then do nothing. No conflict target, so that both unique constraints count.
    """
    row = {
        "id": uuid.uuid4(),
        "owner_id": owner_id,
        "status": "queued",
        "progress": 0,
        "image_key": image_key,
        "image_sha256": image_sha256,
        "idempotency_key": idempotency_key,
        "request_hash": request_hash,
        "upload_id": upload_id,
    }
    values = select(*(literal(value, analyses.c[name].type) for name, value in row.items())).where(
        ~exists().where(DeletedUser.user_id == owner_id)
    )
    # On the table, not the entity: the ORM's bulk-insert path was a tenth of an upload's CPU.
    stmt = (
        insert(analyses)
        .from_select(list(row), values)
        .on_conflict_do_nothing()
        .returning(analyses.c.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def list_owned(
    session: AsyncSession, owner_id: uuid.UUID, *, cursor: str | None, limit: int, item: Any
) -> Page[Any]:
    stmt = paginate(
        select(Analysis).where(Analysis.owner_id == owner_id),
        Analysis.created_at,
        Analysis.id,
        cursor=cursor,
        limit=limit,
    )
    rows = list((await session.execute(stmt)).scalars())
    return page_of(rows, limit, item)


# id, analysis_id, category, created_at, and whether the row was inserted.
CorrectionRow = Row[uuid.UUID, uuid.UUID, str, datetime, bool]


async def set_correction(
    session: AsyncSession, analysis: Analysis, category: str
) -> tuple[CorrectionRow, bool]:
    """Store the owner's correction of the analysis, replacing any earlier one, with its
    `analysis.corrected` event (users counts the analysis under the corrected category); returns
    the correction and whether it is the analysis's first.

    One INSERT ... ON CONFLICT DO UPDATE: of concurrent corrections of one analysis exactly one
    inserts, the others wait for it and update, and none fails on the unique constraint.
    """
    proposed = insert(Correction).values(
        id=uuid.uuid4(), analysis_id=analysis.id, owner_id=analysis.owner_id, category=category
    )
    stmt = proposed.on_conflict_do_update(
        index_elements=[Correction.analysis_id],
        set_={"category": proposed.excluded.category, "created_at": proposed.excluded.created_at},
    ).returning(
        Correction.id,
        Correction.analysis_id,
        Correction.category,
        Correction.created_at,
        # PostgreSQL's way to tell the two apart: a freshly inserted row has no xmax, while the
        # conflict's row lock leaves one on an updated row.
        literal_column("xmax = 0", Boolean).label("inserted"),
    )
    row = (await session.execute(stmt)).one()
    await add_event(
        session,
        outbox,
        ANALYSIS_CORRECTED,
        {
            "analysis_id": str(analysis.id),
            "user_id": str(analysis.owner_id),
            "category": row.category,
            # Events can arrive again or out of order: the consumer keeps the newest.
            "corrected_at": row.created_at.isoformat(),
        },
    )
    return row, bool(row.inserted)
