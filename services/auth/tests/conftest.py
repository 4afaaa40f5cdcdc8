"""Fixtures of the auth tests: a throw-away database and Redis database, the local OAuth/OIDC
provider (real HTTP on a free loopback port), and apps built from settings pointing at it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import AsyncClient

from ecosort_auth.config import Settings
from ecosort_auth.main import create_app
from ecosort_common.migrations import upgrade
from ecosort_common.testing import temporary_database, temporary_redis_db

sys.path.insert(0, str(Path(__file__).parent / "_support"))

from auth_local_provider import (
    SHAPES,
    LocalOAuthProvider,
    ProviderServer,
    RegisteredClient,
)
from auth_test_helpers import (
    AUDIENCE,
    BASE_URL,
    ISSUER,
    AppFactory,
    callback_url,
    client_for_app,
)


@pytest.fixture(scope="session")
def local_provider() -> Iterator[LocalOAuthProvider]:
    provider = LocalOAuthProvider(
        clients={
            shape: RegisteredClient(
                client_id=f"{shape}-client",
                client_secret=f"{shape}-secret",
                redirect_uris=[callback_url(shape), f"{BASE_URL}/elsewhere/{shape}"],
            )
            for shape in SHAPES
        }
    )
    with ProviderServer(provider) as running:
        yield running


@pytest.fixture(scope="session")
def storage() -> Iterator[dict[str, str]]:
    with temporary_database("auth") as database_url, temporary_redis_db() as redis_url:
        upgrade("ecosort_auth", database_url)
        yield {"database_url": database_url, "redis_url": redis_url}


@pytest.fixture(scope="session")
def base_settings(storage: dict[str, str]) -> dict[str, Any]:
    return {
        **storage,
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "auth_key_encryption_key": "test-key-encryption-key",
        "auth_public_base_url": BASE_URL,
        "auth_dev_login_enabled": True,
        # Generous by default; the rate-limit tests build an app with tight limits.
        "auth_rate_signin_per_ip": 10_000,
        "auth_rate_signin_per_subject": 10_000,
        "auth_rate_refresh_per_ip": 10_000,
        "auth_rate_refresh_per_subject": 10_000,
        "outbox_poll_seconds": 0.1,
        "log_json": False,
        "log_level": "warning",
    }


@pytest.fixture(scope="session")
def web_settings(base_settings: dict[str, Any], local_provider: LocalOAuthProvider) -> Settings:
    """Every provider pointed at the local provider."""
    base = local_provider.base_url
    overrides: dict[str, Any] = {}
    for shape in SHAPES:
        overrides |= {
            f"{shape}_client_id": f"{shape}-client",
            f"{shape}_client_secret": f"{shape}-secret",
            f"{shape}_authorize_url": f"{base}/{shape}/authorize",
            f"{shape}_token_url": f"{base}/{shape}/token",
        }
    overrides |= {
        "kakao_app_id": 1234,  # required with a Kakao client id; the web flow does not use it
        "kakao_userinfo_url": f"{base}/kakao/v2/user/me",
        "naver_userinfo_url": f"{base}/naver/v1/nid/me",
        "google_userinfo_url": f"{base}/google/userinfo",
        "google_jwks_url": f"{base}/google/jwks",
        "google_issuers": [local_provider.issuer("google")],
    }
    return Settings(**base_settings, **overrides)


@pytest.fixture(scope="session")
def make_app(base_settings: dict[str, Any]) -> AppFactory:
    """Build and start an extra app on the same database and Redis, with other settings."""

    @asynccontextmanager
    async def running(**overrides: Any) -> AsyncIterator[FastAPI]:
        application = create_app(Settings(**{**base_settings, **overrides}))
        async with LifespanManager(application, startup_timeout=30):
            yield application

    return running


@pytest.fixture(scope="session")
async def app(web_settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(web_settings)
    async with LifespanManager(application, startup_timeout=30):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with client_for_app(app) as http:
        yield http


@pytest.fixture
async def rotating_app(web_settings: Settings) -> AsyncIterator[FastAPI]:
    """An app on a database of its own, for tests that rotate the signing keys: a rotation on
    the shared database would leave the shared app's JWKS cache behind the key that signs."""
    with temporary_database("auth_keys") as database_url:
        upgrade("ecosort_auth", database_url)
        application = create_app(web_settings.model_copy(update={"database_url": database_url}))
        async with LifespanManager(application, startup_timeout=30):
            yield application


@pytest.fixture
async def rotating_client(rotating_app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with client_for_app(rotating_app) as http:
        yield http
