"""Fixtures of the users tests: the service's app on a throw-away database and Redis database,
access tokens, and two ways to deliver events (the real stream, or the handler directly)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from ecosort_common.events import Event
from ecosort_common.outbox import stream_name
from ecosort_common.testing import TokenIssuer, service_fixtures
from ecosort_users.config import Settings
from ecosort_users.handlers import event_handlers
from ecosort_users.main import create_app

token_issuer, settings, app, client = service_fixtures("ecosort_users", Settings, create_app)

Auth = Callable[[uuid.UUID], dict[str, str]]
MakeEvent = Callable[..., Event]
Deliver = Callable[[Event], Awaitable[None]]
# (marker, event) -> whether it has arrived yet
ArriveAfter = Callable[[str, Event], Callable[[], bool]]


@pytest.fixture
def auth(token_issuer: TokenIssuer) -> Auth:
    def headers(user_id: uuid.UUID) -> dict[str, str]:
        return {"Authorization": f"Bearer {token_issuer.token(user_id)}"}

    return headers


@pytest.fixture
def make_event() -> MakeEvent:
    def build(event_type: str, payload: dict[str, Any], event_id: str | None = None) -> Event:
        return Event(
            id=event_id or str(uuid.uuid4()),
            type=event_type,
            source="test",
            occurred_at=datetime.now(UTC).isoformat(),
            payload=payload,
        )

    return build


@pytest.fixture
def apply_event(app: FastAPI, settings: Settings) -> Deliver:
    """Run the production handler of an event in its own transaction (no Redis round trip)."""
    handlers = event_handlers(settings)

    async def apply(ev: Event) -> None:
        async with app.state.sessionmaker() as session, session.begin():
            await handlers[ev.type](session, ev)

    return apply


@pytest.fixture
def arrive_after(monkeypatch: pytest.MonkeyPatch, apply_event: Deliver) -> ArriveAfter:
    """Applies `event` (committed in a transaction of its own) right after the first statement
    whose SQL holds `marker` has run, in the middle of what a request reads; `monkeypatch.undo()`
    ends it. Returns a check that it arrived."""

    def install(marker: str, event: Event) -> Callable[[], bool]:
        execute = AsyncSession.execute
        arrived = False

        async def execute_then_arrive(self: AsyncSession, *args: Any, **kwargs: Any) -> Any:
            nonlocal arrived
            result = await execute(self, *args, **kwargs)
            if not arrived and marker in str(args[0]):
                arrived = True
                await apply_event(event)
            return result

        monkeypatch.setattr(AsyncSession, "execute", execute_then_arrive)
        return lambda: arrived

    return install


@pytest.fixture
def publish(settings: Settings) -> Deliver:
    """XADD an event the way auth's and waste's outbox relays do; the app's consumer takes it."""

    async def xadd(ev: Event) -> None:
        async with Redis.from_url(settings.redis_url, decode_responses=True) as redis:
            await redis.xadd(
                stream_name(ev.type),
                {
                    "id": ev.id,
                    "type": ev.type,
                    "source": ev.source,
                    "occurred_at": ev.occurred_at,
                    "payload": json.dumps(ev.payload),
                },
            )

    return xadd
