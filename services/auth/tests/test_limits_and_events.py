"""Rate limits (429 + Retry-After), the dev login switch, `user.registered` leaving through the
outbox, and `user.deleted` removing identities and sessions."""

from __future__ import annotations

import asyncio
import json
import uuid

from auth_test_helpers import (
    AppFactory,
    assert_problem,
    bearer,
    client_for_app,
    dev_login,
    eventually,
)
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, select, text

from ecosort_auth.models import AuthSession, Identity
from ecosort_auth.sessions import ProviderIdentity, delete_user, sign_in_identity, start_session

DEV_LOGIN = "/api/v1/auth/dev/login"


async def test_sign_in_rate_limits_per_ip_and_per_subject(make_app: AppFactory) -> None:
    async with make_app(
        auth_rate_signin_per_ip=3, auth_rate_signin_per_subject=2, auth_rate_window_seconds=60
    ) as strict:
        # Per subject: the same account from many addresses.
        subject = f"limited-{uuid.uuid4().hex[:8]}"
        for n in range(2):
            async with client_for_app(strict, ip=f"198.51.100.{n + 1}") as client:
                await dev_login(client, subject)
        async with client_for_app(strict, ip="198.51.100.99") as client:
            refused = await client.post(DEV_LOGIN, json={"subject": subject, "nickname": "x"})
        assert_problem(refused, 429)
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert "Too many sign-in requests" in refused.json()["detail"]

        # Per IP: many accounts from one address.
        async with client_for_app(strict, ip="192.0.2.77") as client:
            for _ in range(3):
                await dev_login(client, uuid.uuid4().hex)
            assert_problem(
                await client.post(DEV_LOGIN, json={"subject": "fresh", "nickname": "x"}), 429
            )
            assert_problem(await client.get("/api/v1/auth/kakao/authorize"), 429)


async def test_refresh_rate_limit(make_app: AppFactory) -> None:
    async with make_app(auth_rate_refresh_per_ip=2, auth_rate_refresh_per_subject=100) as strict:
        async with client_for_app(strict, ip="192.0.2.88") as client:
            tokens = await dev_login(client, uuid.uuid4().hex)
            for _ in range(2):
                answer = await client.post("/api/v1/auth/refresh", json=tokens)
                tokens = answer.json()
            limited = await client.post("/api/v1/auth/refresh", json=tokens)
        assert_problem(limited, 429)
        assert "retry-after" in limited.headers
        assert "Too many refresh requests" in limited.json()["detail"]


async def test_dev_login_is_off_by_default(make_app: AppFactory) -> None:
    async with make_app(auth_dev_login_enabled=False) as locked, client_for_app(locked) as client:
        assert_problem(await client.post(DEV_LOGIN, json={"subject": "a", "nickname": "b"}), 404)


async def test_user_registered_is_published(client: AsyncClient, app: FastAPI) -> None:
    tokens = await dev_login(client, f"newcomer-{uuid.uuid4().hex[:8]}", nickname="새내기")
    user_id = tokens["user"]["id"]
    redis = app.state.redis

    async def published() -> bool:
        entries = await redis.xrange("events:user.registered")
        return any(json.loads(f["payload"])["user_id"] == user_id for _, f in entries)

    await eventually(published)


async def test_user_deleted_removes_identities_and_sessions(
    client: AsyncClient, app: FastAPI
) -> None:
    tokens = await dev_login(client, f"leaving-{uuid.uuid4().hex[:8]}")
    user_id = uuid.UUID(tokens["user"]["id"])
    await app.state.redis.xadd(
        "events:user.deleted",
        {
            "id": str(uuid.uuid4()),
            "type": "user.deleted",
            "source": "users",
            "occurred_at": "2026-11-27T00:00:00+00:00",
            "payload": json.dumps({"user_id": str(user_id)}),
        },
    )

    async def forgotten() -> bool:
        async with app.state.sessionmaker() as db:
            left = await db.scalar(
                select(func.count()).select_from(Identity).where(Identity.user_id == user_id)
            )
            sessions = await db.scalar(
                select(func.count()).select_from(AuthSession).where(AuthSession.user_id == user_id)
            )
        return left == 0 and sessions == 0

    await eventually(forgotten)
    assert_problem(
        await client.get("/api/v1/auth/sessions", headers=bearer(tokens["access_token"])), 401
    )
    assert_problem(await client.post("/api/v1/auth/refresh", json=tokens), 401)


async def test_a_sign_in_meeting_the_deletion_leaves_no_session_behind(
    client: AsyncClient, app: FastAPI
) -> None:
    """A sign-in of the same person on another device, committing while `user.deleted` is
    applied, must not keep a session (and a refresh token that renews it) of a deleted
    account."""
    subject = f"two-devices-{uuid.uuid4().hex[:8]}"
    user_id = uuid.UUID((await dev_login(client, subject))["user"]["id"])
    who = ProviderIdentity(provider="dev", subject=subject, nickname=None, email=None)
    async with app.state.sessionmaker() as signing_in, signing_in.begin():
        await sign_in_identity(signing_in, who)  # found: the same user
        await start_session(
            signing_in,
            user_id=user_id,
            provider="dev",
            device="tablet",
            refresh_lifetime_seconds=60,
        )

        async def deletion() -> None:
            async with app.state.sessionmaker() as db, db.begin():
                await delete_user(db, user_id)

        deleting = asyncio.create_task(deletion())
        await _waiting_on_a_lock(app)  # the deletion is under way, waiting on the sign-in
        # The sign-in commits here, as its transaction ends.
    await deleting

    async with app.state.sessionmaker() as db:
        sessions = await db.scalar(
            select(func.count()).select_from(AuthSession).where(AuthSession.user_id == user_id)
        )
    assert sessions == 0


async def _waiting_on_a_lock(app: FastAPI) -> None:
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(500):
        async with app.state.sessionmaker() as db:
            if (await db.execute(waiting)).scalar_one():
                return
        await asyncio.sleep(0.01)
    raise AssertionError("nothing waited on a lock")
