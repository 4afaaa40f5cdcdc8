"""Refresh rotation, logout and the public signing keys."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ecosort_auth.api.deps import client_ip, rate_limiter, settings_of
from ecosort_auth.api.schemas import LogoutIn, RefreshIn, TokenAnswer
from ecosort_auth.config import Settings
from ecosort_auth.issuance import tokens_for_refresh
from ecosort_auth.keys import published_jwks
from ecosort_auth.sessions import owner_of_refresh_token, revoke_session, session_of_refresh_token
from ecosort_common.errors import Problem
from ecosort_common.openapi import WWW_AUTHENTICATE_HEADER, retry_later
from ecosort_common.ratelimit import RateLimiter
from ecosort_common.security import bearer_token

router = APIRouter(tags=["tokens"])
SettingsDep = Annotated[Settings, Depends(settings_of)]
LimiterDep = Annotated[RateLimiter, Depends(rate_limiter)]
# Verifiers refetch on an unknown kid anyway; this only bounds how stale a cached copy may be.
JWKS_MAX_AGE_SECONDS = 300


@router.post(
    "/refresh",
    response_model=TokenAnswer,
    responses={
        401: {
            "description": "Unknown, expired or revoked refresh token, or one already spent "
            "(which revokes its session)."
        },
        429: retry_later("Too many refreshes from this address or for this user."),
    },
)
async def refresh(
    body: RefreshIn, request: Request, settings: SettingsDep, limiter: LimiterDep
) -> TokenAnswer:
    """Spend a refresh token for a new pair. A spent token coming back revokes its session."""
    await limiter.hit("refresh", f"ip:{client_ip(request)}", settings.auth_rate_refresh_per_ip)
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as db:
        owner = await owner_of_refresh_token(db, body.refresh_token)
    if owner is not None:
        await limiter.hit("refresh", f"user:{owner}", settings.auth_rate_refresh_per_subject)
    return await tokens_for_refresh(request.app, body.refresh_token)


@router.post(
    "/logout",
    status_code=204,
    response_class=Response,
    responses={
        401: {
            "description": "Neither a refresh token we issued nor a valid access token.",
            "headers": WWW_AUTHENTICATE_HEADER,  # when it was the access token
        }
    },
)
async def logout(request: Request, settings: SettingsDep, body: LogoutIn | None = None) -> Response:
    """End one session, named by its refresh token in the body or by the bearer access token."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    if body is not None and body.refresh_token:
        async with sessionmaker() as db:
            session_id = await session_of_refresh_token(db, body.refresh_token)
        if session_id is None:
            raise Problem(401, "The refresh token is not one we issued.")
    else:
        principal = await request.app.state.token_verifier.verify(bearer_token(request))
        session_id = uuid.UUID(principal.session_id)
    async with sessionmaker() as db, db.begin():
        await revoke_session(db, session_id, reason="logout")
    await request.app.state.revocations.revoke(
        [session_id],
        ttl_seconds=settings.auth_access_token_ttl_seconds,
    )
    return Response(status_code=204)


@router.get("/jwks.json")
async def jwks(request: Request, response: Response) -> dict[str, Any]:
    """The current and the previous public signing key (RFC 7517)."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as db:
        keys = await published_jwks(db)
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE_SECONDS}"
    return keys
