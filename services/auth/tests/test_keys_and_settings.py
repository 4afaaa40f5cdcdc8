"""Signing keys at rest, the `rotate-keys` command, and the settings that guard them."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from auth_test_helpers import bearer, client_for_app, dev_login, unverified_parts
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select

from ecosort_auth.__main__ import rotate_keys_command
from ecosort_auth.config import (
    DevLoginNotAllowedError,
    MissingKakaoAppIdError,
    MissingKeyEncryptionKeyError,
    Settings,
)
from ecosort_auth.keys import KeyRing
from ecosort_auth.main import create_app
from ecosort_auth.models import SigningKey


async def test_private_keys_are_encrypted_at_rest(app: FastAPI) -> None:
    async with app.state.sessionmaker() as db:
        rows = (await db.execute(select(SigningKey))).scalars().all()
        assert rows
        assert all(
            r.encrypted_private_key.startswith("-----BEGIN ENCRYPTED PRIVATE KEY") for r in rows
        )
        with pytest.raises(ValueError):
            await KeyRing("not-the-key-encryption-key").current(db)


async def test_rotate_keys_command(rotating_client: AsyncClient, rotating_app: FastAPI) -> None:
    before = await dev_login(rotating_client, "cli-rotation")
    settings = rotating_app.state.settings
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "AUTH_KEY_ENCRYPTION_KEY": settings.key_encryption_key,
        "ENVIRONMENT": "test",
    }
    command = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ecosort_auth",
        "rotate-keys",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(command.communicate(), 60)
    assert command.returncode == 0, stderr.decode()
    new_kid = stdout.decode().strip().rpartition(" ")[2]
    after = await dev_login(rotating_client, "cli-rotation")
    assert unverified_parts(after["access_token"])[0]["kid"] == new_kid
    for tokens in (before, after):
        answer = await rotating_client.get(
            "/api/v1/auth/sessions", headers=bearer(tokens["access_token"])
        )
        assert answer.status_code == 200, answer.text


def test_key_encryption_key_is_required() -> None:
    with pytest.raises(MissingKeyEncryptionKeyError, match="AUTH_KEY_ENCRYPTION_KEY"):
        _ = Settings().key_encryption_key
    assert Settings(auth_key_encryption_key="k").key_encryption_key == "k"
    assert Settings().auth_dev_login_enabled is False


@pytest.mark.parametrize("environment", ["production", "staging", "prod", "Dev", ""])
def test_dev_login_is_refused_outside_local_dev_and_test(
    monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    monkeypatch.setenv("ENVIRONMENT", environment)
    monkeypatch.setenv("AUTH_DEV_LOGIN_ENABLED", "true")
    with pytest.raises(DevLoginNotAllowedError, match="AUTH_DEV_LOGIN_ENABLED"):
        Settings()
    monkeypatch.setenv("AUTH_DEV_LOGIN_ENABLED", "false")
    assert Settings().environment == environment


@pytest.mark.parametrize("environment", ["local", "dev", "test"])
def test_dev_login_is_allowed_in_local_dev_and_test(
    monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    monkeypatch.setenv("ENVIRONMENT", environment)
    monkeypatch.setenv("AUTH_DEV_LOGIN_ENABLED", "true")
    assert Settings().auth_dev_login_enabled is True


def test_kakao_needs_its_app_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAKAO_APP_ID", raising=False)
    monkeypatch.setenv("KAKAO_CLIENT_ID", "kakao-rest-api-key")
    monkeypatch.setenv("KAKAO_CLIENT_SECRET", "kakao-client-secret-value")
    with pytest.raises(MissingKakaoAppIdError, match="KAKAO_APP_ID") as refused:
        Settings()
    assert "kakao-client-secret-value" not in str(refused.value)  # the error reaches the logs
    monkeypatch.setenv("KAKAO_APP_ID", "1234")
    assert Settings().kakao_app_id == 1234
    monkeypatch.delenv("KAKAO_CLIENT_ID")
    monkeypatch.delenv("KAKAO_APP_ID")
    assert Settings().kakao_app_id is None  # Kakao disabled: nothing to check


async def test_auth_refuses_to_start_without_key_encryption_key(
    base_settings: dict[str, Any],
) -> None:
    settings = Settings(**{**base_settings, "auth_key_encryption_key": None})
    with pytest.raises(MissingKeyEncryptionKeyError):
        async with LifespanManager(create_app(settings), startup_timeout=30):
            pass


def test_redirect_allow_list_defaults_to_our_callback() -> None:
    settings = Settings(auth_public_base_url="https://api.ecosort.kr/")
    assert settings.allowed_redirect_uris("naver") == [
        "https://api.ecosort.kr/api/v1/auth/naver/callback"
    ]
    custom = Settings(auth_redirect_uri_allowlist=["https://app.ecosort.kr/{provider}/done"])
    assert custom.allowed_redirect_uris("kakao") == ["https://app.ecosort.kr/kakao/done"]


async def test_auth_starts_alive_but_not_ready_with_its_database_down(
    base_settings: dict[str, Any],
) -> None:
    unreachable = {**base_settings, "database_url": "postgresql://nobody@127.0.0.1:9/nowhere"}
    application = create_app(Settings(**unreachable))
    async with (
        LifespanManager(application, startup_timeout=30),
        client_for_app(application) as http,
    ):
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["dependencies"]["database"] is False


def test_rotate_keys_help_describes_the_command_without_rotating(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        rotate_keys_command(["--help"])
    assert exited.value.code == 0
    assert "Rotate the token signing key" in capsys.readouterr().out
