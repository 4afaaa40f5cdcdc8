"""Sessions that ended longer ago than the retention are deleted with their refresh tokens, by a
loop the app runs; everything else, rotated tokens of live sessions included, stays as it was."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from auth_test_helpers import (
    AppFactory,
    assert_problem,
    bearer,
    dev_login,
    eventually,
    unverified_parts,
)
from fastapi import FastAPI
from httpx import AsyncClient
from pydantic import ValidationError
from sqlalchemy import func, select, update

from ecosort_auth import pruning
from ecosort_auth.config import Settings
from ecosort_auth.models import AuthSession, RefreshToken
from ecosort_auth.pruning import prune_ended_sessions
from ecosort_auth.tokens import hash_refresh_token
from ecosort_common import outbox as outbox_module

REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
SESSIONS = "/api/v1/auth/sessions"
RETENTION = timedelta(days=30)
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Family:
    """A session and every refresh token it was given, oldest first: all but the last spent."""

    session_id: uuid.UUID
    refresh_tokens: list[str]
    access_token: str


async def _family(client: AsyncClient, subject: str, device: str, refreshes: int = 2) -> Family:
    answer = await dev_login(client, subject, device=device)
    tokens = [answer["refresh_token"]]
    for _ in range(refreshes):
        rotated = await client.post(REFRESH, json={"refresh_token": tokens[-1]})
        assert rotated.status_code == 200, rotated.text
        answer = rotated.json()
        tokens.append(answer["refresh_token"])
    _, claims = unverified_parts(answer["access_token"])
    return Family(uuid.UUID(claims["sid"]), tokens, answer["access_token"])


async def _expired(app: FastAPI, family: Family, ago: timedelta) -> None:
    # A family's tokens expire with it (sessions.py): both move back.
    expired_at = datetime.now(UTC) - ago
    async with app.state.sessionmaker() as db, db.begin():
        await db.execute(
            update(AuthSession)
            .where(AuthSession.id == family.session_id)
            .values(expires_at=expired_at)
        )
        await db.execute(
            update(RefreshToken)
            .where(RefreshToken.session_id == family.session_id)
            .values(expires_at=expired_at)
        )


async def _signed_out(client: AsyncClient, app: FastAPI, family: Family, ago: timedelta) -> None:
    out = await client.post(LOGOUT, json={"refresh_token": family.refresh_tokens[-1]})
    assert out.status_code == 204, out.text
    async with app.state.sessionmaker() as db, db.begin():
        await db.execute(
            update(AuthSession)
            .where(AuthSession.id == family.session_id)
            .values(revoked_at=datetime.now(UTC) - ago)
        )


async def _stored_tokens(app: FastAPI, family: Family) -> set[str]:
    """The hashes of the family's refresh tokens still stored, found by their own values (not by
    the session, which may be gone)."""
    hashes = [hash_refresh_token(token) for token in family.refresh_tokens]
    async with app.state.sessionmaker() as db:
        stored = await db.execute(
            select(RefreshToken.token_hash).where(RefreshToken.token_hash.in_(hashes))
        )
        return set(stored.scalars())


async def _session_kept(app: FastAPI, family: Family) -> bool:
    async with app.state.sessionmaker() as db:
        found = await db.scalar(
            select(func.count()).select_from(AuthSession).where(AuthSession.id == family.session_id)
        )
    return found == 1


def _retention(app: FastAPI) -> timedelta:
    return timedelta(seconds=app.state.settings.auth_ended_session_retention_seconds)


def test_the_retention_defaults_to_thirty_days_and_must_be_positive(
    base_settings: dict[str, Any],
) -> None:
    """A retention of zero or less would put the cut-off at or after now: it would delete the
    sessions still running."""
    assert Settings(**base_settings).auth_ended_session_retention_seconds == 30 * 24 * 3600
    for refused in (0, -1):
        with pytest.raises(ValidationError):
            Settings(**{**base_settings, "auth_ended_session_retention_seconds": refused})


async def test_sessions_ended_before_the_retention_go_with_every_refresh_token(
    client: AsyncClient, app: FastAPI
) -> None:
    assert _retention(app) == RETENTION
    subject = f"pruned-{uuid.uuid4().hex[:8]}"
    expired_long_ago = await _family(client, subject, "old phone")
    await _expired(app, expired_long_ago, RETENTION + HOUR)
    signed_out_long_ago = await _family(client, subject, "old tablet")  # expires in a month
    await _signed_out(client, app, signed_out_long_ago, RETENTION + HOUR)
    expired_lately = await _family(client, subject, "laptop")
    await _expired(app, expired_lately, RETENTION - HOUR)
    signed_out_lately = await _family(client, subject, "tablet")
    await _signed_out(client, app, signed_out_lately, RETENTION - HOUR)
    live = await _family(client, subject, "phone")

    assert await prune_ended_sessions(app.state.sessionmaker, RETENTION) >= 2

    for gone in (expired_long_ago, signed_out_long_ago):
        assert not await _session_kept(app, gone)
        assert await _stored_tokens(app, gone) == set()
    for kept in (expired_lately, signed_out_lately, live):
        assert await _session_kept(app, kept)
        # Every one of them, the rotated ones included.
        assert await _stored_tokens(app, kept) == {
            hash_refresh_token(token) for token in kept.refresh_tokens
        }


async def test_a_pruned_refresh_token_is_refused_as_unknown_and_the_rest_answers_as_before(
    client: AsyncClient, app: FastAPI
) -> None:
    subject = f"after-pruning-{uuid.uuid4().hex[:8]}"
    old = await _family(client, subject, "old phone")
    await _signed_out(client, app, old, RETENTION + HOUR)
    live = await _family(client, subject, "phone")
    refused = assert_problem(
        await client.post(REFRESH, json={"refresh_token": old.refresh_tokens[-1]}), 401
    )
    assert refused["type"] == "urn:ecosort:auth:refresh-revoked"
    listed = (await client.get(SESSIONS, headers=bearer(live.access_token))).json()

    await prune_ended_sessions(app.state.sessionmaker, RETENTION)

    # The same 401 problem+json as any refused refresh token: the app signs in again.
    for token in (old.refresh_tokens[-1], old.refresh_tokens[0]):
        refused = assert_problem(await client.post(REFRESH, json={"refresh_token": token}), 401)
        assert refused["type"] == "urn:ecosort:auth:refresh-unknown"
    assert_problem(await client.post(LOGOUT, json={"refresh_token": old.refresh_tokens[-1]}), 401)
    assert_problem(
        await client.delete(f"{SESSIONS}/{old.session_id}", headers=bearer(live.access_token)),
        404,  # as it was while revoked
    )
    assert (await client.get(SESSIONS, headers=bearer(live.access_token))).json() == listed

    # A rotated token of the live session, replayed, still revokes its whole family.
    reused = assert_problem(
        await client.post(REFRESH, json={"refresh_token": live.refresh_tokens[0]}), 401
    )
    assert reused["type"] == "urn:ecosort:auth:refresh-reused"
    assert_problem(await client.post(REFRESH, json={"refresh_token": live.refresh_tokens[-1]}), 401)
    assert_problem(await client.get(SESSIONS, headers=bearer(live.access_token)), 401)


async def test_a_backlog_larger_than_a_batch_goes_in_one_round(
    client: AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch of two sessions: the five below take three transactions.
    monkeypatch.setattr(outbox_module, "PRUNE_BATCH", 2)
    monkeypatch.setattr(pruning, "PRUNE_BATCH", 2)
    subject = f"backlog-{uuid.uuid4().hex[:8]}"
    backlog = [await _family(client, subject, f"device {n}", refreshes=1) for n in range(5)]
    for family in backlog:
        await _expired(app, family, RETENTION + HOUR)

    assert await prune_ended_sessions(app.state.sessionmaker, RETENTION) >= 5

    for family in backlog:
        assert not await _session_kept(app, family)
        assert await _stored_tokens(app, family) == set()


async def test_the_app_prunes_in_the_background_while_it_runs(
    make_app: AppFactory, client: AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pruning, "PRUNE_EVERY_SECONDS", 0.1)
    async with make_app():
        # Ended after the app's first round: a later round of its loop deletes it.
        ended = await _family(client, f"background-{uuid.uuid4().hex[:8]}", "old phone")
        await _expired(app, ended, RETENTION + HOUR)

        async def pruned() -> bool:
            return not await _session_kept(app, ended)

        await eventually(pruned)
    assert await _stored_tokens(app, ended) == set()
