"""Cursors round-trip, and foreign cursors are refused clearly."""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    MetaData,
    NullPool,
    Row,
    Select,
    Table,
    create_engine,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import UUID

from ecosort_common.errors import Problem
from ecosort_common.pagination import (
    MAX_PAGE_SIZE,
    decode_cursor,
    encode_cursor,
    page_of,
    paginate,
)
from ecosort_common.testing import temporary_database


def test_cursor_round_trip() -> None:
    created, row_id = datetime(2026, 11, 27, 1, 2, 3, 456789, tzinfo=UTC), uuid.uuid4()
    assert decode_cursor(encode_cursor(created, row_id)) == (created, row_id)


# Fixed, not random: test ids must be the same in every pytest-xdist worker.
A_ROW = uuid.UUID("5f0c8d52-0d3a-4a53-9a55-0e6f3c1b7a10")


def b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!",
        "bm90IGpzb24",
        "WzEsMl0",
        b64('["2024-01-01T00:00:00+00:00", 5]'),  # not a UUID: once a 500
        b64('["2024-01-01T00:00:00+00:00", [1]]'),
        b64(f'["2024-01-01T00:00:00", "{A_ROW}"]'),  # no time zone
        b64(f'["2024-01-01T00:00:00+00:00", "{A_ROW}", 3]'),
        b64('{"a": 1}'),
        b64("[" * 3000),  # nested beyond the JSON parser's depth: once a 500
    ],
)
def test_foreign_cursor_is_a_400_problem(cursor: str) -> None:
    with pytest.raises(Problem) as raised:
        decode_cursor(cursor)
    assert raised.value.status == 400


OWNER = uuid.UUID(int=1)
_metadata = MetaData()
ROWS = Table(
    "rows",
    _metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("owner_id", UUID(as_uuid=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_rows_owner_created", "owner_id", "created_at", "id"),
)
MINE = select(ROWS.c.id, ROWS.c.created_at).where(ROWS.c.owner_id == OWNER)


@pytest.fixture(scope="module")
def long_list() -> Iterator[Engine]:
    """3000 rows of OWNER, three to a timestamp, among 3000 of others."""
    with temporary_database("pagination") as url:
        engine = create_engine(url, poolclass=NullPool)
        with engine.begin() as conn:
            _metadata.create_all(conn)
            conn.execute(
                text(
                    "INSERT INTO rows SELECT md5(n::text)::uuid, "
                    "CASE WHEN n % 2 = 0 THEN :owner ELSE md5('x' || n)::uuid END, "
                    "timestamptz '2026-01-01 00:00+00' + (n / 6) * interval '1 s' "
                    "FROM generate_series(1, 6000) n"
                ),
                {"owner": OWNER},
            )
            conn.execute(text("ANALYZE rows"))
        try:
            yield engine
        finally:
            engine.dispose()


def _newest_first(conn: Connection) -> list[Row[Any]]:
    return list(conn.execute(MINE.order_by(ROWS.c.created_at.desc(), ROWS.c.id.desc())))


def _page(cursor: str | None, limit: int) -> Select[Any]:
    return paginate(MINE, ROWS.c.created_at, ROWS.c.id, cursor=cursor, limit=limit)


def test_pages_go_through_ties_by_id_without_gaps_or_repeats(long_list: Engine) -> None:
    with long_list.connect() as conn:
        seen: list[Row[Any]] = []
        cursor = None
        while True:
            rows = list(conn.execute(_page(cursor, MAX_PAGE_SIZE)))
            page = page_of(rows, MAX_PAGE_SIZE)
            seen += page.items
            if (cursor := page.next_cursor) is None:
                break
        assert seen == _newest_first(conn)


def test_a_deep_page_starts_at_the_cursor_in_the_index(long_list: Engine) -> None:
    """It reads the page's rows from the index, not every newer row too."""
    with long_list.connect() as conn:
        deep = _newest_first(conn)[2000]
        # The index's plan, whatever the planner would make of so small a table.
        conn.execute(text("SET enable_seqscan = off"))
        conn.execute(text("SET enable_bitmapscan = off"))
        compiled = _page(encode_cursor(deep.created_at, deep.id), 20).compile(long_list)
        plan = conn.exec_driver_sql(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {compiled}", compiled.params
        ).scalar_one()[0]["Plan"]
    scan = _scan_of(plan, "ix_rows_owner_created")
    assert scan["Actual Rows"] == 21
    assert scan.get("Rows Removed by Filter", 0) == 0  # 2001 with `a < x OR (a = x AND ...)`


def _scan_of(plan: dict[str, Any], index: str) -> dict[str, Any]:
    if plan.get("Index Name") == index:
        return plan
    for child in plan.get("Plans", []):
        with contextlib.suppress(LookupError):
            return _scan_of(child, index)
    raise LookupError(index)
