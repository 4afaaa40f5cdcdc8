"""Turning a verified sign-in into our tokens, and a refresh token into the next pair."""

from __future__ import annotations

import uuid

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ecosort_auth.api.schemas import TokenAnswer, UserOut
from ecosort_auth.config import Settings
from ecosort_auth.keys import KeyRing
from ecosort_auth.sessions import (
    ProviderIdentity,
    RefreshRefused,
    rotate_refresh_token,
    sign_in_identity,
    start_session,
)
from ecosort_auth.tokens import issue_access_token
from ecosort_common.errors import Problem


async def _access_token(
    app: FastAPI, db: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID
) -> str:
    settings: Settings = app.state.settings
    keyring: KeyRing = app.state.keyring
    return issue_access_token(
        await keyring.current(db),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        user_id=user_id,
        session_id=session_id,
        lifetime_seconds=settings.auth_access_token_ttl_seconds,
    )


async def tokens_for_sign_in(app: FastAPI, who: ProviderIdentity, device: str) -> TokenAnswer:
    """Find or create the user, open a session, and answer with a token pair, all in one
    transaction (with the `user.registered` event when the user is new)."""
    settings: Settings = app.state.settings
    sessionmaker: async_sessionmaker[AsyncSession] = app.state.sessionmaker
    async with sessionmaker() as db, db.begin():
        user = await sign_in_identity(db, who)
        opened = await start_session(
            db,
            user_id=user.user_id,
            provider=who.provider,
            device=device,
            refresh_lifetime_seconds=settings.auth_refresh_token_ttl_seconds,
        )
        access = await _access_token(app, db, user.user_id, opened.session_id)
    return TokenAnswer(
        access_token=access,
        refresh_token=opened.refresh_token,
        expires_in=settings.auth_access_token_ttl_seconds,
        user=UserOut(
            id=user.user_id, nickname=user.nickname, provider=user.provider, is_new=user.created
        ),
    )


REFUSALS = {
    "unknown": "The refresh token is not one we issued.",
    "expired": "The refresh token has expired; sign in again.",
    "revoked": "The session of this refresh token has been revoked; sign in again.",
    "reused": "This refresh token was already used; the session has been revoked.",
}


async def tokens_for_refresh(app: FastAPI, refresh_token: str) -> TokenAnswer:
    settings: Settings = app.state.settings
    sessionmaker: async_sessionmaker[AsyncSession] = app.state.sessionmaker
    async with sessionmaker() as db, db.begin():
        rotated = await rotate_refresh_token(db, refresh_token)
        if not isinstance(rotated, RefreshRefused):
            access = await _access_token(app, db, rotated.user_id, rotated.session_id)
    # The transaction has committed here, a reuse's revocation included.
    if isinstance(rotated, RefreshRefused):
        if rotated.revoked_session is not None:
            await app.state.revocations.revoke(
                [rotated.revoked_session],
                ttl_seconds=settings.auth_access_token_ttl_seconds,
            )
        raise Problem(
            401,
            REFUSALS[rotated.reason],
            title="Refresh token refused",
            type_=f"urn:ecosort:auth:refresh-{rotated.reason}",
        )
    return TokenAnswer(
        access_token=access,
        refresh_token=rotated.refresh_token,
        expires_in=settings.auth_access_token_ttl_seconds,
        user=UserOut(id=rotated.user_id),
    )
