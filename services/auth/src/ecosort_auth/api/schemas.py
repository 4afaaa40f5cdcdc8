"""Request and response bodies of the auth API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator


class RequestIn(BaseModel):
    """A request body. Its strings may reach a PostgreSQL column, whose text cannot hold U+0000:
    refused here, as a 422, rather than by the database, as a 500. One validator for every field,
    a field added later included; a field validator leaves each field's schema and its other
    checks as they are."""

    @field_validator("*")
    @classmethod
    def _without_nul(cls, value: Any) -> Any:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("the NUL character (U+0000) is not allowed")
        return value


class UserOut(BaseModel):
    id: uuid.UUID
    nickname: str | None = None
    provider: str | None = None
    is_new: bool = False


class TokenAnswer(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
    user: UserOut


class ProvidersOut(BaseModel):
    providers: list[str]
    dev_login: bool


class MobileTokenIn(RequestIn):
    """What the provider's native SDK handed the app: Google an ID token, Kakao and Naver an
    access token."""

    id_token: str | None = Field(default=None, max_length=8192)
    access_token: str | None = Field(default=None, max_length=4096)
    device: str | None = Field(default=None, max_length=200)


class DevLoginIn(RequestIn):
    subject: str = Field(min_length=1, max_length=255)
    nickname: str = Field(min_length=1, max_length=100)
    device: str | None = Field(default=None, max_length=200)


class RefreshIn(RequestIn):
    refresh_token: str = Field(min_length=1, max_length=512)


class LogoutIn(RequestIn):
    refresh_token: str | None = Field(default=None, max_length=512)


class SessionOut(BaseModel):
    id: uuid.UUID
    device: str
    provider: str
    created_at: datetime
    last_used_at: datetime
    current: bool
