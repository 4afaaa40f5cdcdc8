"""Cursors round-trip, and foreign cursors are refused clearly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from ecosort_common.errors import Problem
from ecosort_common.pagination import decode_cursor, encode_cursor


def test_cursor_round_trip() -> None:
    created, row_id = datetime(2026, 11, 27, 1, 2, 3, 456789, tzinfo=UTC), uuid.uuid4()
    assert decode_cursor(encode_cursor(created, row_id)) == (created, row_id)


@pytest.mark.parametrize("cursor", ["", "!!!", "bm90IGpzb24", "WzEsMl0"])
def test_foreign_cursor_is_a_400_problem(cursor: str) -> None:
    with pytest.raises(Problem) as raised:
        decode_cursor(cursor)
    assert raised.value.status == 400
