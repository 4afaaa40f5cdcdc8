"""The service's deadline on its own time (ecosort_common.deadline): a hung store is a 503 to
retry; a slow client and a long stream are not the service's time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from httpx import ASGITransport, AsyncClient
from starlette.types import Receive, Scope, Send

from ecosort_common.app import create_service_app
from ecosort_common.settings import ServiceSettings
from ecosort_common.testing import silencing_proxy

from .conftest import demo_router

PROBLEM = "application/problem+json"
DEADLINE = 0.3


def deadline_router() -> APIRouter:
    router = APIRouter()

    @router.get("/hang")
    async def hang() -> None:
        await asyncio.Event().wait()  # a dependency that never answers

    @router.post("/hang")
    async def hang_after_acting() -> None:
        await asyncio.Event().wait()

    @router.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"received": len(await request.body())}

    @router.get("/slow-stream")
    async def slow_stream() -> Response:
        return SlowParts()

    @router.get("/late")
    async def late() -> dict[str, bool]:
        # Lost on the way, as Python 3.11's wait_for can lose a cancellation.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        return {"late": True}

    @router.get("/own-timeout")
    async def own_timeout() -> None:
        raise TimeoutError("the app's own")

    return router


class SlowParts(Response):
    """A stream that never reads from the client, as Starlette streams under ASGI spec 2.4 (no
    disconnect listener), so only the response's start can stop the clock."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for part in (b"first ", b"second"):
            await asyncio.sleep(3 * DEADLINE)
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def _app(settings: ServiceSettings) -> FastAPI:
    return create_service_app(
        settings.model_copy(update={"request_deadline_seconds": DEADLINE}),
        title="deadline",
        routers=[deadline_router(), demo_router()],
    )


@pytest.fixture
async def client(settings: ServiceSettings) -> AsyncIterator[AsyncClient]:
    app = _app(settings)
    async with LifespanManager(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


async def test_a_request_the_service_cannot_finish_is_a_503_to_retry(client: AsyncClient) -> None:
    started = time.monotonic()
    async with asyncio.timeout(10):
        response = await client.get("/api/v1/demo/hang")
    waited = time.monotonic() - started
    assert (response.status_code, response.headers["content-type"]) == (503, PROBLEM)
    assert int(response.headers["retry-after"]) > 0
    assert response.json()["instance"] == "/api/v1/demo/hang"
    assert "may have taken effect" not in response.json()["detail"]
    assert DEADLINE <= waited < DEADLINE + 2


async def test_a_write_that_ran_out_of_time_may_have_taken_effect(client: AsyncClient) -> None:
    """Its commit may have gone through with only the answer lost: a client retrying blindly
    would act twice."""
    async with asyncio.timeout(10):
        response = await client.post("/api/v1/demo/hang")
    assert response.status_code == 503
    assert "may have taken effect" in response.json()["detail"]
    assert "Idempotency-Key" in response.json()["detail"]


async def test_a_slow_upload_is_the_clients_time(client: AsyncClient) -> None:
    async def slow_body() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * 1000
            await asyncio.sleep(DEADLINE)

    async with asyncio.timeout(10):
        response = await client.post("/api/v1/demo/upload", content=slow_body())
    assert response.status_code == 200
    assert response.json() == {"received": 4000}


async def test_a_stream_once_started_runs_past_the_deadline(client: AsyncClient) -> None:
    response = await client.get("/api/v1/demo/slow-stream")
    assert response.status_code == 200
    assert response.text == "first second"


async def test_an_answer_after_a_lost_cancellation_goes_out(client: AsyncClient) -> None:
    """Not a 500 from a deadline that can no longer be moved: the app answered, late."""
    async with asyncio.timeout(10):
        response = await client.get("/api/v1/demo/late")
    assert (response.status_code, response.json()) == (200, {"late": True})


async def test_the_apps_own_timeout_stays_an_error_of_its_own(client: AsyncClient) -> None:
    response = await client.get("/api/v1/demo/own-timeout")
    assert (response.status_code, response.headers["content-type"]) == (500, PROBLEM)


async def test_a_postgresql_that_hangs_mid_request_is_a_503(settings: ServiceSettings) -> None:
    """Connected, then silent: no connect timeout applies and PostgreSQL offers no client-side
    statement timeout. psycopg's cancellation of the abandoned query takes up to 10 s more
    (5 s to send the cancel, 5 s for the answer) before it closes the connection."""
    url = urlsplit(settings.database_url)
    assert url.hostname is not None
    with silencing_proxy((url.hostname, url.port or 5432)) as (port, silence):
        user = f"{url.username}@" if url.username else ""
        via_proxy = urlunsplit(url._replace(netloc=f"{user}127.0.0.1:{port}"))
        app = _app(settings.model_copy(update={"database_url": via_proxy}))
        async with LifespanManager(app):
            transport = ASGITransport(app=app, raise_app_exceptions=False)
            async with AsyncClient(transport=transport, base_url="http://test") as http:
                assert (await http.get("/api/v1/demo/rows")).status_code == 200
                silence()
                started = time.monotonic()
                async with asyncio.timeout(30):
                    response = await http.get("/api/v1/demo/rows")
                waited = time.monotonic() - started
    assert (response.status_code, response.headers["content-type"]) == (503, PROBLEM)
    assert waited < DEADLINE + 12, waited
