"""Refresh-token rotation and reuse detection (RFC 9700), concurrency against PostgreSQL,
sessions listing, sign-out of one device, and logout."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from auth_test_helpers import assert_problem, bearer, client_for_app, dev_login
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select, update

from ecosort_auth.models import AuthSession, RefreshToken
from ecosort_auth.tokens import hash_refresh_token
from ecosort_common.testing import problem_schema_name

REFRESH = "/api/v1/auth/refresh"
SESSIONS = "/api/v1/auth/sessions"


async def test_refresh_rotates_and_stores_only_hashes(client: AsyncClient, app: FastAPI) -> None:
    first = await dev_login(client, "rotate")
    second = (await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["user"]["id"] == first["user"]["id"]
    third = await client.post(REFRESH, json={"refresh_token": second["refresh_token"]})
    assert third.status_code == 200, third.text
    async with app.state.sessionmaker() as db:
        stored = set((await db.execute(select(RefreshToken.token_hash))).scalars())
    assert first["refresh_token"] not in stored
    assert hash_refresh_token(first["refresh_token"]) in stored


async def test_token_answers_and_sessions_are_not_stored_by_caches(client: AsyncClient) -> None:
    # RFC 6749 §5.1: an answer holding tokens carries Cache-Control: no-store.
    login = await client.post(
        "/api/v1/auth/dev/login", json={"subject": "no-store", "nickname": "tester"}
    )
    refreshed = await client.post(REFRESH, json={"refresh_token": login.json()["refresh_token"]})
    sessions = await client.get(SESSIONS, headers=bearer(refreshed.json()["access_token"]))
    for answer in (login, refreshed, sessions):
        assert answer.status_code == 200, answer.text
        assert answer.headers["cache-control"] == "no-store"
    jwks = await client.get("/api/v1/auth/jwks.json")
    assert jwks.headers["cache-control"].startswith("public")


async def test_reused_refresh_token_revokes_the_whole_family(client: AsyncClient) -> None:
    stolen = await dev_login(client, "reuse")
    legit = (await client.post(REFRESH, json={"refresh_token": stolen["refresh_token"]})).json()
    # The spent token comes back (an attacker replaying it): refused, and the family dies.
    body = assert_problem(await client.post(REFRESH, json=stolen), 401)
    assert body["type"] == "urn:ecosort:auth:refresh-reused"
    assert_problem(await client.post(REFRESH, json={"refresh_token": legit["refresh_token"]}), 401)
    assert_problem(await client.get(SESSIONS, headers=bearer(legit["access_token"])), 401)
    assert_problem(await client.get(SESSIONS, headers=bearer(stolen["access_token"])), 401)


async def test_unknown_refresh_token_is_refused(client: AsyncClient) -> None:
    assert_problem(await client.post(REFRESH, json={"refresh_token": "made-up"}), 401)
    assert_problem(await client.post(REFRESH, json={}), 422)


async def test_an_expired_refresh_token_is_refused_and_spends_nothing(
    client: AsyncClient, app: FastAPI
) -> None:
    """A refresh token past its `expires_at` (its session's end) is refused, not rotated; the
    session is not revoked for it (an expiry is no reuse), so its access token still works."""
    tokens = await dev_login(client, "expired-refresh")
    token_hash = hash_refresh_token(tokens["refresh_token"])
    async with app.state.sessionmaker() as db, db.begin():
        await db.execute(
            update(RefreshToken)
            .where(RefreshToken.token_hash == token_hash)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert_problem(await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]}), 401)
    async with app.state.sessionmaker() as db:
        spent = await db.scalar(
            select(RefreshToken.spent_at).where(RefreshToken.token_hash == token_hash)
        )
    assert spent is None
    assert (await client.get(SESSIONS, headers=bearer(tokens["access_token"]))).status_code == 200


async def test_an_ended_session_is_not_listed(client: AsyncClient, app: FastAPI) -> None:
    subject = f"ended-{uuid.uuid4().hex[:8]}"
    phone = await dev_login(client, subject, device="phone")
    await dev_login(client, subject, device="old laptop")
    async with app.state.sessionmaker() as db, db.begin():
        await db.execute(
            update(AuthSession)
            .where(AuthSession.device == "old laptop")
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    listed = await client.get(SESSIONS, headers=bearer(phone["access_token"]))
    assert [item["device"] for item in listed.json()["items"]] == ["phone"]


async def test_fifty_concurrent_refreshes_exactly_one_succeeds(app: FastAPI) -> None:
    async with client_for_app(app) as client:
        tokens = await dev_login(client, "race")
        body = {"refresh_token": tokens["refresh_token"]}
        answers = await asyncio.gather(*(client.post(REFRESH, json=body) for _ in range(50)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(200) == 1, statuses
    assert statuses.count(401) == 49, statuses


async def test_sessions_list_and_sign_out_of_one_device(client: AsyncClient) -> None:
    subject = f"devices-{uuid.uuid4().hex[:8]}"
    phone = await dev_login(client, subject, device="Galaxy S25")
    tablet = await dev_login(client, subject, device="iPad")
    listed = await client.get(SESSIONS, headers=bearer(phone["access_token"]))
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert {i["device"] for i in items} == {"Galaxy S25", "iPad"}
    assert [i["current"] for i in items if i["device"] == "Galaxy S25"] == [True]
    assert all(i["created_at"] and i["last_used_at"] for i in items)
    tablet_sid = next(i["id"] for i in items if i["device"] == "iPad")

    # Someone else cannot see or end it: 404, as if it did not exist.
    stranger = await dev_login(client, f"stranger-{uuid.uuid4().hex[:8]}")
    assert_problem(
        await client.delete(f"{SESSIONS}/{tablet_sid}", headers=bearer(stranger["access_token"])),
        404,
    )
    assert_problem(
        await client.delete(f"{SESSIONS}/{uuid.uuid4()}", headers=bearer(phone["access_token"])),
        404,
    )
    gone = await client.delete(f"{SESSIONS}/{tablet_sid}", headers=bearer(phone["access_token"]))
    assert gone.status_code == 204
    # The tablet's tokens stop working now, not in 15 minutes.
    assert_problem(await client.get(SESSIONS, headers=bearer(tablet["access_token"])), 401)
    assert_problem(await client.post(REFRESH, json={"refresh_token": tablet["refresh_token"]}), 401)
    left = (await client.get(SESSIONS, headers=bearer(phone["access_token"]))).json()["items"]
    assert [i["device"] for i in left] == ["Galaxy S25"]


async def test_logout_with_the_refresh_token(client: AsyncClient) -> None:
    tokens = await dev_login(client, "logout-by-refresh")
    out = await client.post("/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    assert out.status_code == 204
    assert_problem(await client.get(SESSIONS, headers=bearer(tokens["access_token"])), 401)
    assert_problem(await client.post("/api/v1/auth/logout"), 401)


async def test_the_openapi_document_says_refresh_and_logout_may_answer_401(
    client: AsyncClient,
) -> None:
    document = (await client.get("/api/v1/auth/openapi.json")).json()
    refresh = document["paths"]["/api/v1/auth/refresh"]["post"]["responses"]
    logout = document["paths"]["/api/v1/auth/logout"]["post"]["responses"]
    for responses in (refresh, logout):
        assert problem_schema_name(responses["401"]) == "Problem"
    assert problem_schema_name(refresh["429"]) == "Problem"
    assert "Retry-After" in refresh["429"]["headers"]
    assert "WWW-Authenticate" in logout["401"]["headers"]  # a refused bearer token


async def test_the_openapi_document_says_what_sign_in_may_answer(client: AsyncClient) -> None:
    paths = (await client.get("/api/v1/auth/openapi.json")).json()["paths"]
    for path, method in (("callback", "get"), ("token", "post")):
        responses = paths[f"/api/v1/auth/{{provider}}/{path}"][method]["responses"]
        for status in ("401", "404", "429", "502"):
            assert problem_schema_name(responses[status]) == "Problem", (path, status)
        assert "Retry-After" in responses["429"]["headers"]
    authorize = paths["/api/v1/auth/{provider}/authorize"]["get"]["responses"]
    dev_login = paths["/api/v1/auth/dev/login"]["post"]["responses"]
    for responses in (authorize, dev_login):
        assert {"404", "429"} <= responses.keys()
