"""Signing keys at rest, the `rotate-keys` command, and the settings that guard them."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from auth_test_helpers import bearer, dev_login, unverified_parts
from fastapi import FastAPI
from httpx import AsyncClient
from pydantic import ValidationError
from sqlalchemy import select

from ecosort_auth.config import Settings
from ecosort_auth.keys import KeyRing
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


async def test_rotate_keys_command(client: AsyncClient, app: FastAPI) -> None:
    before = await dev_login(client, "cli-rotation")
    settings = app.state.settings
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
    after = await dev_login(client, "cli-rotation")
    assert unverified_parts(after["access_token"])[0]["kid"] == new_kid
    for tokens in (before, after):
        answer = await client.get("/api/v1/auth/sessions", headers=bearer(tokens["access_token"]))
        assert answer.status_code == 200, answer.text


def test_key_encryption_key_is_required_outside_local() -> None:
    with pytest.raises(ValidationError, match="AUTH_KEY_ENCRYPTION_KEY"):
        Settings(environment="production")
    assert Settings(environment="production", auth_key_encryption_key="k").key_encryption_key == "k"
    assert Settings(environment="local").auth_dev_login_enabled is False


def test_redirect_allow_list_defaults_to_our_callback() -> None:
    settings = Settings(auth_public_base_url="https://api.ecosort.kr/")
    assert settings.allowed_redirect_uris("naver") == [
        "https://api.ecosort.kr/api/v1/auth/naver/callback"
    ]
    custom = Settings(auth_redirect_uri_allowlist=["https://app.ecosort.kr/{provider}/done"])
    assert custom.allowed_redirect_uris("kakao") == ["https://app.ecosort.kr/kakao/done"]
