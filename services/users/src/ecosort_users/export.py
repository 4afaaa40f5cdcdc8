"""GET /me/export's document, written while it is read: a person's whole history can be 100k
analyses (14 MB of JSON), which built at once took ~135 MB and held the event loop for seconds."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from pydantic_core import to_json
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ecosort_users import crud
from ecosort_users.schemas import ExportOut, ProfileOut
from ecosort_users.stats import compute_stats


def attachment_name(profile: ProfileOut) -> str:
    return f"ecosort-export-{profile.id}.json"


def _json(value: Any) -> str:
    # As JSONResponse renders, so the document reads as it did when it was built at once.
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _around_history(export: ExportOut) -> tuple[bytes, bytes]:
    """The document before its history's items, and after them, in ExportOut's field order."""
    fields = export.model_dump(mode="json")
    keys = list(fields)
    cut = keys.index("history")
    head = "{" + "".join(f"{_json(key)}:{_json(fields[key])}," for key in keys[:cut])
    tail = "".join(f",{_json(key)}:{_json(fields[key])}" for key in keys[cut + 1 :]) + "}"
    return f'{head}"history":['.encode(), f"]{tail}".encode()


async def export_document(
    sessionmaker: async_sessionmaker[AsyncSession],
    profile: ProfileOut,
    *,
    timezone: str,
    now: datetime,
) -> AsyncIterator[bytes]:
    """ExportOut as JSON, in pieces: one batch of the history at a time.

    Its own session, not the request's: the body is sent after the route has returned. Once the
    first piece is out the status is sent too, so a failure later cuts the document short (a
    client sees invalid JSON), which is the best a stream can say."""
    async with sessionmaker() as session, session.begin():
        # One snapshot: the statistics count exactly the history listed, and a correction
        # applied meanwhile shows once (pending, or in the history).
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        stats = await compute_stats(session, profile.id, timezone=timezone, now=now)
        pending = await crud.pending_corrections(session, profile.id)
        head, tail = _around_history(
            ExportOut(
                exported_at=now,
                profile=profile,
                history=[],
                pending_corrections=pending,
                stats=stats,
            )
        )
        yield head
        separator = b""
        async for batch in crud.history_batches(session, profile.id):
            # pydantic's own serializer (HistoryItem's field names and formats), without a model
            # per row: a fifth of the time.
            yield separator + to_json(batch)[1:-1]
            separator = b","
        yield tail
