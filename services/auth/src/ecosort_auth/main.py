"""ASGI entry point: `uvicorn ecosort_auth.main:app`."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from ecosort_auth import models
from ecosort_auth.api import api_router
from ecosort_auth.config import Settings, get_settings
from ecosort_auth.consumers import UserDeletedHandler
from ecosort_auth.keys import KeyRing, ensure_current_key
from ecosort_auth.providers import GoogleKeys
from ecosort_auth.ratelimit import RateLimiter
from ecosort_common.app import create_service_app
from ecosort_common.security import TokenVerifier

SELF_BASE_URL = "http://auth.internal"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    on_user_deleted = UserDeletedHandler(settings.auth_access_token_ttl_seconds)

    async def start_auth(app: FastAPI) -> None:
        app.state.keyring = KeyRing(settings.key_encryption_key)
        app.state.rate_limiter = RateLimiter(
            app.state.redis, window_seconds=settings.auth_rate_window_seconds
        )
        app.state.google_keys = GoogleKeys(settings.google_jwks_url)
        on_user_deleted.redis = app.state.redis
        async with app.state.sessionmaker() as db, db.begin():
            await ensure_current_key(db, settings.key_encryption_key)  # first start: make one
        # Auth checks its own access tokens (sessions, logout) with the same verifier as every
        # other service, fed from its own JWKS route in-process rather than over the network.
        await app.state.token_verifier.aclose()
        app.state.token_verifier = TokenVerifier(
            jwks_url=f"{SELF_BASE_URL}{settings.api_prefix}/jwks.json",
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            cache_seconds=settings.jwks_cache_seconds,
            redis=app.state.redis,
            http=httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=SELF_BASE_URL),
        )
        return None

    return create_service_app(
        settings,
        title="EcoSort auth",
        description="Sign-in with Kakao, Naver and Google; our JWTs, JWKS, refresh rotation "
        "and sessions.",
        routers=[api_router],
        outbox=models.outbox,
        consumers={"user.deleted": on_user_deleted},
        processed_events=models.processed_events,
        on_startup=[start_auth],
    )


app = create_app()
