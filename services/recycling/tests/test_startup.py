"""A replica on a freshly migrated database: it loads its own (newer) data files at start-up,
and without them it answers 503 problem+json rather than empty lists."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient

from ecosort_common.migrations import upgrade
from ecosort_common.testing import temporary_database
from ecosort_recycling.config import Settings
from ecosort_recycling.main import create_app


@pytest.fixture(scope="module")
def fresh_database() -> Iterator[str]:
    with temporary_database("recycling_fresh") as database_url:
        upgrade("ecosort_recycling", database_url)
        yield database_url


async def _status_of_battery(settings: Settings) -> tuple[int, str]:
    application = create_app(settings)
    async with (
        LifespanManager(application, startup_timeout=30),
        AsyncClient(transport=ASGITransport(app=application), base_url="http://test") as http,
    ):
        response = await http.get("/api/v1/recycling/categories/battery")
        return response.status_code, response.headers["content-type"]


async def test_without_autoload_an_unloaded_database_is_503(
    settings: Settings, fresh_database: str
) -> None:
    unloaded = settings.model_copy(
        update={"database_url": fresh_database, "knowledge_autoload": False}
    )
    assert await _status_of_battery(unloaded) == (503, "application/problem+json")


async def test_a_replica_loads_its_data_files_at_start_up(
    settings: Settings, fresh_database: str
) -> None:
    fresh = settings.model_copy(update={"database_url": fresh_database})
    assert (await _status_of_battery(fresh))[0] == 200
