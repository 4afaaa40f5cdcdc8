"""Cursors round-trip, and foreign cursors are refused clearly."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest

from ecosort_common.errors import Problem
from ecosort_common.pagination import decode_cursor, encode_cursor


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
