"""Every log line of a request names its request id, so its lines can be found together."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from httpx import AsyncClient
from structlog.testing import capture_logs

from ecosort_common import errors, observability


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    # Fresh loggers: those cached at first use keep the processors of an earlier configuration
    # (every app built in these tests configures logging again), which capture_logs cannot see.
    monkeypatch.setattr(errors, "log", structlog.get_logger("ecosort.errors"))
    monkeypatch.setattr(observability, "log", structlog.get_logger("ecosort.access"))
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as entries:
        yield entries


async def test_an_unexpected_errors_log_line_names_the_request(
    client: AsyncClient, logs: list[dict[str, Any]]
) -> None:
    # Starlette runs the handler of the unexpected from its outermost middleware, outside ours.
    response = await client.get("/api/v1/demo/boom", headers={"x-request-id": "rid-boom-1"})
    assert response.status_code == 500
    (error,) = [line for line in logs if line["event"] == "unhandled_error"]
    assert error["request_id"] == "rid-boom-1"


async def test_a_request_served_inside_another_leaves_it_its_id(
    client: AsyncClient, logs: list[dict[str, Any]]
) -> None:
    response = await client.get("/api/v1/demo/nested", headers={"x-request-id": "rid-outer"})
    assert response.status_code == 200
    inner = response.json()["inner_request_id"]
    assert inner != "rid-outer"
    after = [line for line in logs if line["event"] == "after_nested"]
    access = [line for line in logs if line.get("route") == "/api/v1/demo/nested"]
    assert [line.get("request_id") for line in after + access] == ["rid-outer", "rid-outer"]
    assert structlog.contextvars.get_contextvars().get("request_id") is None
