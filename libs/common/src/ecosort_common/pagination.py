"""Cursor pagination: opaque cursors, and the usual list over (created_at, id), newest first
(stable under inserts, no OFFSET scans). Lists ordered otherwise (by relevance, by distance)
put their own position in a cursor with `encode_cursor_of`, bound to the query they page."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import AwareDatetime, BaseModel, TypeAdapter
from sqlalchemy import Select, tuple_
from sqlalchemy.orm import InstrumentedAttribute

from ecosort_common.errors import Problem

T = TypeVar("T")
MAX_PAGE_SIZE = 100


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor_of(position: Sequence[Any], *, query: Sequence[Any] = ()) -> str:
    """`position` (JSON values) as an opaque cursor. With `query`, the parameters of the request
    it pages, a digest of them rides along: a position means nothing in another query's list."""
    values = [*position, _digest(query)] if query else list(position)
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor_of(cursor: str, shape: TypeAdapter[T], *, query: Sequence[Any] = ()) -> T:
    """The position in `cursor`, validated as `shape`; 400 for a cursor this API did not hand
    out for this query. With `query`, `shape` validates the position alone."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded))
        if query and not (isinstance(values, list) and values and values.pop() == _digest(query)):
            raise Problem(
                400,
                "The cursor belongs to another query: send it with the parameters of the page "
                "it came with.",
                title="Invalid cursor",
            )
        return shape.validate_python(values)
    # Bad base64 (binascii.Error), JSON, or contents (ValidationError); JSON nested too deep
    # for the parser (RecursionError).
    except (ValueError, RecursionError) as exc:
        raise Problem(
            400, "The cursor is not one this API handed out.", title="Invalid cursor"
        ) from exc


def _digest(query: Sequence[Any]) -> str:
    return hashlib.sha256(json.dumps(list(query), default=str).encode()).hexdigest()[:16]


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    return encode_cursor_of([created_at.isoformat(), str(row_id)])


# A cursor comes back from the client: whatever it holds is checked, not trusted (a naive time
# could not even be compared with the column).
_CURSOR = TypeAdapter(tuple[AwareDatetime, uuid.UUID])


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    return decode_cursor_of(cursor, _CURSOR)


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
        # A row comparison (the same rows as `a < x OR (a = x AND b < y)` for NOT NULL
        # columns): only this form lets an index on (..., created_at, id) start its scan at the
        # cursor. The OR was a filter over every newer row, 50k of them for a page half-way
        # down a 100k-row list: 35 ms, 0.2 ms now.
        stmt = stmt.where(tuple_(created_at, row_id) < (after_created, after_id))
    return stmt.order_by(created_at.desc(), row_id.desc()).limit(min(limit, MAX_PAGE_SIZE) + 1)


def page_of(rows: list[Any], limit: int, item: Any = None) -> Page[Any]:
    """Turn the limit+1 rows of `paginate` into a page; `item` maps a row to its API shape."""
    limit = min(limit, MAX_PAGE_SIZE)
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if has_more and rows else None
    items = [item(row) for row in rows] if item else rows
    return Page(items=items, next_cursor=next_cursor)
