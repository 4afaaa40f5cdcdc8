"""A 405 names every method of the resource (RFC 9110 §15.5.6), not only those of the first route
the router found on the path."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import APIRouter, FastAPI
from httpx import ASGITransport, AsyncClient
from starlette.exceptions import HTTPException

from ecosort_common.app import create_service_app
from ecosort_common.errors import PROBLEM_JSON
from ecosort_common.settings import ServiceSettings

API = "/api/v1/demo"


def _routers() -> list[APIRouter]:
    # Two routers sharing a path, as a service's routes for one resource may be split.
    reading, writing = APIRouter(), APIRouter()

    @reading.get("/things")
    async def list_things() -> list[str]:
        return []

    @reading.post("/things/{thing_id}/archive")
    async def archive(thing_id: int) -> None:
        return None

    @writing.patch("/things")
    async def change_things() -> None:
        return None

    @writing.delete("/things")
    async def delete_things() -> None:
        return None

    @writing.post("/locked")
    async def locked() -> None:
        # A handler's own 405: its Allow stands as it wrote it.
        raise HTTPException(405, headers={"Allow": "GET"})

    return [reading, writing]


@pytest.fixture
async def client() -> AsyncIterator[AsyncClient]:
    # Never started: no request here reaches the database or Redis.
    settings = ServiceSettings(service_name="demo", log_json=False, log_level="warning")
    app: FastAPI = create_service_app(settings, title="demo", routers=_routers())
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.mark.parametrize("method", ["PUT", "POST", "OPTIONS"])
async def test_allow_names_the_methods_of_every_route_on_the_path(
    client: AsyncClient, method: str
) -> None:
    refused = await client.request(method, f"{API}/things")
    assert (refused.status_code, refused.headers["content-type"]) == (405, PROBLEM_JSON)
    assert refused.headers["allow"] == "GET, HEAD, PATCH, DELETE"


async def test_allow_leaves_out_routes_of_other_paths(client: AsyncClient) -> None:
    refused = await client.get(f"{API}/things/7/archive")
    assert refused.headers["allow"] == "POST"
    head = await client.head(f"{API}/things/7/archive")
    assert (head.status_code, head.headers["allow"]) == (405, "POST")


async def test_a_handlers_own_405_keeps_its_allow(client: AsyncClient) -> None:
    refused = await client.post(f"{API}/locked")
    assert (refused.status_code, refused.headers["allow"]) == (405, "GET, HEAD")
