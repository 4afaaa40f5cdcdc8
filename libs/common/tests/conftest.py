"""Fixtures for the common library's own tests: a small app built the way services build theirs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from httpx import ASGITransport, AsyncClient
from pydantic import BaseModel
from sqlalchemy import Column, Integer, String, Table, create_engine, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase

from ecosort_common.app import create_service_app
from ecosort_common.db import get_session, new_metadata
from ecosort_common.errors import Problem
from ecosort_common.events import processed_events_table
from ecosort_common.head import refuse_head
from ecosort_common.outbox import outbox_table
from ecosort_common.security import Principal, current_principal
from ecosort_common.settings import ServiceSettings
from ecosort_common.testing import TokenIssuer, temporary_database, temporary_redis_db


class Base(DeclarativeBase):
    metadata = new_metadata()


outbox = outbox_table(Base.metadata)
processed_events = processed_events_table(Base.metadata)
notes = Table(
    "notes",
    Base.metadata,
    Column("id", Integer, primary_key=True),
    Column("text", String(100), nullable=False),
)


class Echo(BaseModel):
    count: int


def demo_router() -> APIRouter:
    router = APIRouter()

    @router.post("/echo")
    async def echo(body: Echo) -> Echo:
        return body

    @router.get("/teapot")
    async def teapot() -> None:
        raise Problem(418, "Short and stout.", title="I'm a teapot", hint="tip me over")

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail postgresql://10.0.0.5")

    @router.get("/nested")
    async def nested(request: Request) -> dict[str, str]:
        # A request served in-process inside this one, as auth reads its own JWKS.
        transport = ASGITransport(app=request.app)
        async with AsyncClient(transport=transport, base_url="http://inner") as http:
            inner = await http.get("/healthz")
        structlog.get_logger("demo").info("after_nested")
        return {"inner_request_id": inner.headers["x-request-id"]}

    @router.get("/notes/{note_id}")
    async def note(note_id: int, full: bool = False) -> dict[str, int]:
        raise Problem(404, f"No note {note_id}.")

    @router.get("/forever")
    async def forever() -> StreamingResponse:
        async def ticks() -> AsyncIterator[bytes]:
            while True:
                yield b"tick\n"
                await asyncio.sleep(0.05)

        return StreamingResponse(ticks(), media_type="text/plain")

    @router.get("/act", dependencies=[Depends(refuse_head)])
    async def act(request: Request) -> dict[str, int]:
        # A GET that acts, as one spending a one-time sign-in state does.
        request.app.state.acts = getattr(request.app.state, "acts", 0) + 1
        return {"acts": request.app.state.acts}

    @router.post("/my-echo")
    async def my_echo(body: Echo, principal: Principal = Depends(current_principal)) -> Echo:
        return body

    @router.get("/public")
    async def public(response: Response) -> dict[str, str]:
        response.headers["Cache-Control"] = "public, max-age=60"
        return {"for": "anyone"}

    @router.get("/me")
    async def me(principal: Principal = Depends(current_principal)) -> dict[str, str]:
        return {"user_id": str(principal.user_id), "sid": principal.session_id}

    @router.get("/rows")
    async def rows(session: AsyncSession = Depends(get_session)) -> dict[str, int]:
        return {"rows": int(await session.scalar(select(func.count()).select_from(outbox)))}

    @router.get("/too-big")
    async def too_big(session: AsyncSession = Depends(get_session)) -> None:
        # A statement over a program limit: psycopg's OperationalError, and a bug, not an outage.
        await session.execute(text("SELECT array_fill(0, ARRAY[200000000])"))

    return router


def build_app(settings: ServiceSettings) -> FastAPI:
    return create_service_app(settings, title="demo", routers=[demo_router()], outbox=outbox)


@pytest.fixture(scope="session")
def token_issuer() -> Iterator[TokenIssuer]:
    issuer = TokenIssuer().start()
    yield issuer
    issuer.stop()


@pytest.fixture(scope="session")
def settings(token_issuer: TokenIssuer) -> Iterator[ServiceSettings]:
    with temporary_database("common") as database_url, temporary_redis_db() as redis_url:
        engine = create_engine(database_url)
        Base.metadata.create_all(engine)
        engine.dispose()
        yield ServiceSettings(
            service_name="demo",
            database_url=database_url,
            redis_url=redis_url,
            jwks_url=token_issuer.jwks_url,
            jwt_issuer=token_issuer.issuer,
            jwt_audience=token_issuer.audience,
            outbox_relay_enabled=False,
            log_json=False,
        )


@pytest.fixture(scope="session")
async def app(settings: ServiceSettings) -> AsyncIterator[FastAPI]:
    application = build_app(settings)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://test") as http:
        yield http
