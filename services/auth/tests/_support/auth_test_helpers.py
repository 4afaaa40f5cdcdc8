"""Small helpers the auth tests share."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from sqlalchemy import select

from ecosort_auth.models import outbox
from ecosort_common.events import USER_REGISTERED


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait up to 10 s for `check` to hold: for what background loops do."""
    for _ in range(100):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met within 10 s")


def assert_problem(response: Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert "Traceback" not in response.text
    return body


async def dev_login(
    client: AsyncClient, subject: str, nickname: str = "tester", device: str | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] = {"subject": subject, "nickname": nickname}
    if device:
        payload["device"] = device
    response = await client.post("/api/v1/auth/dev/login", json=payload)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unverified_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (
        json.loads(base64.urlsafe_b64decode(pad(header))),
        json.loads(base64.urlsafe_b64decode(pad(payload))),
    )


BASE_URL = "http://auth.test"
ISSUER = "http://ecosort.test"
AUDIENCE = "ecosort"


def callback_url(provider: str) -> str:
    return f"{BASE_URL}/api/v1/auth/{provider}/callback"


AppFactory = Callable[..., AbstractAsyncContextManager[FastAPI]]


def client_for_app(application: FastAPI, ip: str = "203.0.113.10") -> AsyncClient:
    """An httpx client speaking ASGI to the app, as a caller at `ip`."""
    transport = ASGITransport(app=application, client=(ip, 50000))
    return AsyncClient(transport=transport, base_url=BASE_URL)


async def registered_payloads(app: FastAPI) -> list[dict[str, Any]]:
    """Every `user.registered` payload auth has staged in its outbox."""
    async with app.state.sessionmaker() as db:
        staged = await db.execute(
            select(outbox.c.payload).where(outbox.c.event_type == USER_REGISTERED)
        )
        return list(staged.scalars())
