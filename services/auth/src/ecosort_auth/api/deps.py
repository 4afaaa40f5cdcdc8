"""Dependencies shared by auth's routes."""

from __future__ import annotations

from fastapi import Request

from ecosort_auth.config import Settings
from ecosort_common.ratelimit import RateLimiter


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def rate_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


def client_ip(request: Request) -> str:
    # Behind the gateway, uvicorn's --proxy-headers (with FORWARDED_ALLOW_IPS naming the
    # gateway) has already replaced this with the real client's address.
    return request.client.host if request.client else "unknown"


def device_of(request: Request, given: str | None = None) -> str:
    return (given or request.headers.get("user-agent") or "unknown device")[:200]
