"""ASGI entry point: `uvicorn ecosort_auth.main:app`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta

import httpx
import structlog
from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError

from ecosort_auth import models
from ecosort_auth.api import api_router
from ecosort_auth.config import Settings, get_settings
from ecosort_auth.consumers import UserDeletedHandler
from ecosort_auth.keys import KeyRing, ensure_current_key
from ecosort_auth.providers import google_keys
from ecosort_auth.pruning import run_session_pruning
from ecosort_common.app import create_service_app
from ecosort_common.events import USER_DELETED
from ecosort_common.ratelimit import RateLimiter
from ecosort_common.security import TokenVerifier

SELF_BASE_URL = "http://auth.internal"
log = structlog.get_logger("ecosort.auth")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    on_user_deleted = UserDeletedHandler(settings.auth_access_token_ttl_seconds)

    async def start_auth(app: FastAPI) -> Awaitable[None] | None:
        app.state.keyring = KeyRing(settings.key_encryption_key)  # no key: refuse to start
        app.state.rate_limiter = RateLimiter(
            app.state.redis, "auth", window_seconds=settings.auth_rate_window_seconds
        )
        app.state.google_keys = google_keys(settings)
        on_user_deleted.revocations = app.state.revocations
        # Auth checks its own access tokens (sessions, logout) with the same verifier as every
        # other service, fed from its own JWKS route in-process rather than over the network.
        await app.state.token_verifier.aclose()
        app.state.token_verifier = TokenVerifier(
            jwks_url=f"{SELF_BASE_URL}{settings.api_prefix}/jwks.json",
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            cache_seconds=settings.jwks_cache_seconds,
            revocations=app.state.revocations,
            http=httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=SELF_BASE_URL),
        )
        # The first start makes a signing key. With the database down, auth still starts (alive,
        # not ready) and keeps trying in the background instead of crashing in a loop.
        if await _ensure_signing_key(app, settings.key_encryption_key):
            return None
        return _until_signing_key_exists(app, settings.key_encryption_key)

    return create_service_app(
        settings,
        title="EcoSort auth",
        description="Sign-in with Kakao, Naver and Google; our JWTs, JWKS, refresh rotation "
        "and sessions.",
        routers=[api_router],
        outbox=models.outbox,
        consumers={USER_DELETED: on_user_deleted},
        processed_events=models.processed_events,
        on_startup=[start_auth, _start_session_pruning],
        on_shutdown=[_close_google_keys],
    )


async def _start_session_pruning(app: FastAPI) -> Awaitable[None]:
    settings: Settings = app.state.settings
    retention = timedelta(seconds=settings.auth_ended_session_retention_seconds)
    return run_session_pruning(app.state.sessionmaker, retention)


async def _close_google_keys(app: FastAPI) -> None:
    await app.state.google_keys.aclose()


async def _ensure_signing_key(app: FastAPI, key_encryption_key: str) -> bool:
    try:
        async with app.state.sessionmaker() as db, db.begin():
            await ensure_current_key(db, key_encryption_key)
        return True
    except (OSError, SQLAlchemyError) as exc:
        log.warning("signing_key_check_failed", error=type(exc).__name__)
        return False


async def _until_signing_key_exists(app: FastAPI, key_encryption_key: str) -> None:
    delay = 0.5
    while not await _ensure_signing_key(app, key_encryption_key):
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


app = create_app()
