"""Cursor pagination over (created_at, id), newest first: stable under inserts, no OFFSET scans."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import AwareDatetime, BaseModel, TypeAdapter
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from ecosort_common.errors import Problem

T = TypeVar("T")
MAX_PAGE_SIZE = 100


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# A cursor comes back from the client: whatever it holds is checked, not trusted (a naive time
# could not even be compared with the column).
_CURSOR = TypeAdapter(tuple[AwareDatetime, uuid.UUID])


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return _CURSOR.validate_json(base64.urlsafe_b64decode(padded))
    except ValueError as exc:  # bad base64 (binascii.Error) or contents (ValidationError)
        raise Problem(
            400, "The cursor is not one this API handed out.", title="Invalid cursor"
        ) from exc


def paginate(
    stmt: Select[Any],
    created_at: InstrumentedAttribute[datetime],
    row_id: InstrumentedAttribute[uuid.UUID],
    *,
    cursor: str | None,
    limit: int,
) -> Select[Any]:
    """Order newest first and fetch one row more than asked, to know whether a next page exists."""
    if cursor:
        after_created, after_id = decode_cursor(cursor)
        stmt = stmt.where(
            or_(created_at < after_created, and_(created_at == after_created, row_id < after_id))
        )
    return stmt.order_by(created_at.desc(), row_id.desc()).limit(min(limit, MAX_PAGE_SIZE) + 1)


def page_of(rows: list[Any], limit: int, item: Any = None) -> Page[Any]:
    """Turn the limit+1 rows of `paginate` into a page; `item` maps a row to its API shape."""
    limit = min(limit, MAX_PAGE_SIZE)
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if has_more and rows else None
    items = [item(row) for row in rows] if item else rows
    return Page(items=items, next_cursor=next_cursor)
