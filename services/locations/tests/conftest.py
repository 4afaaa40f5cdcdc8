"""Fixtures of the locations tests: the app on a throw-away database and Redis database, and a
way to import data files through the production importer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from fastapi import FastAPI

from ecosort_common.testing import service_fixtures
from ecosort_locations.config import Settings
from ecosort_locations.importer.load import ImportReport, import_file
from ecosort_locations.kakao import KakaoLocalClient
from ecosort_locations.main import create_app

token_issuer, settings, app, client = service_fixtures("ecosort_locations", Settings, create_app)

# The shared data beside the repository (../shared), as every suite finds it: CI has it there.
SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "collection-points"
Importer = Callable[..., Awaitable[ImportReport]]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        # A failure, not a skip: a skip would pass CI with the importer's real-data tests unrun.
        pytest.fail(f"the shared public data is not at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def import_data(app: FastAPI) -> Importer:
    """Import bytes as a file of the given name, in one transaction, as the CLI does."""

    async def run(
        file_name: str,
        data: bytes,
        point_type: str = "clothing",
        geocoder: KakaoLocalClient | None = None,
    ) -> ImportReport:
        async with app.state.sessionmaker() as session, session.begin():
            return await import_file(session, file_name, data, point_type, geocoder=geocoder)

    return run
