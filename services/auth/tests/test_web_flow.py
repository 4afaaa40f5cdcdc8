"""The web sign-in flow against the local OAuth/OIDC provider, for Kakao, Naver and Google:
authorize (state + PKCE S256) → the provider → callback → our tokens; and its refusals."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from auth_local_provider import LocalOAuthProvider
from auth_test_helpers import (
    AppFactory,
    assert_problem,
    callback_url,
    client_for_app,
    registered_payloads,
)
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select
from starlette.responses import HTMLResponse, JSONResponse, Response

from ecosort_auth.models import Identity

PROVIDERS = ["kakao", "naver", "google"]


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def _authorize(client: AsyncClient, provider: str, **params: str) -> str:
    response = await client.get(f"/api/v1/auth/{provider}/authorize", params=params)
    assert response.status_code == 302, response.text
    return response.headers["location"]


async def _provider_redirect(provider_url: str) -> str:
    """What the browser does at the provider: it signs in and is sent back with a code."""
    async with httpx.AsyncClient() as browser:
        response = await browser.get(provider_url)
    assert response.status_code == 302, response.text
    return response.headers["location"]


async def _callback(client: AsyncClient, back_url: str) -> httpx.Response:
    parts = urlsplit(back_url)
    return await client.get(f"{parts.path}?{parts.query}")


def _subject(provider: str) -> str:
    # Kakao's ids are numbers; the others are strings.
    return str(uuid.uuid4().int % 10**12) if provider == "kakao" else uuid.uuid4().hex


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_whole_web_flow_issues_tokens_and_one_user_per_subject(
    client: AsyncClient, app: FastAPI, local_provider: LocalOAuthProvider, provider: str
) -> None:
    subject = _subject(provider)
    local_provider.sign_in_as(provider, subject, "분리수거왕")

    to_provider = await _authorize(client, provider)
    params = _query(to_provider)
    assert to_provider.startswith(f"{local_provider.base_url}/{provider}/authorize")
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43 and params["state"]
    assert params["redirect_uri"] == callback_url(provider)
    assert ("nonce" in params) == (provider == "google")

    answer = await _callback(client, await _provider_redirect(to_provider))
    assert answer.status_code == 200, answer.text
    tokens: dict[str, Any] = answer.json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 900
    assert tokens["user"]["nickname"] == "분리수거왕" and tokens["user"]["is_new"] is True
    user_id = tokens["user"]["id"]
    # The provider saw the verifier that matches the challenge, and our client's credentials.
    exchange = local_provider.token_requests[-1]
    assert exchange["client_id"] == f"{provider}-client" and exchange["code_verifier"]

    # The access token works on a protected route.
    sessions = await client.get(
        "/api/v1/auth/sessions", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert sessions.status_code == 200, sessions.text

    # Same (provider, subject) again → same user, not new.
    again = await _callback(client, await _provider_redirect(await _authorize(client, provider)))
    assert again.json()["user"]["id"] == user_id and again.json()["user"]["is_new"] is False

    async with app.state.sessionmaker() as db:
        identities = (
            (await db.execute(select(Identity).where(Identity.subject == subject))).scalars().all()
        )
    registered = await registered_payloads(app)
    assert [str(i.user_id) for i in identities] == [user_id]
    assert [p for p in registered if p["user_id"] == user_id] == [
        {
            "user_id": user_id,
            "provider": provider,
            "nickname": "분리수거왕",
            "email": "someone@example.com",
        }
    ]


async def test_answers_with_tokens_are_never_stored(client: AsyncClient) -> None:
    """RFC 6749 §5.1: no cache may keep tokens. The callback is a page in the browser, whose
    disk cache would otherwise hold the tokens for anyone at that computer to read."""
    signed_in = await _callback(client, await _provider_redirect(await _authorize(client, "kakao")))
    dev = await client.post("/api/v1/auth/dev/login", json={"subject": "cache", "nickname": "c"})
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": dev.json()["refresh_token"]}
    )
    for answer in (signed_in, dev, refreshed):
        assert answer.status_code == 200, answer.text
        assert answer.headers["cache-control"] == "no-store", answer.request.url


async def test_state_is_single_use(client: AsyncClient) -> None:
    back = await _provider_redirect(await _authorize(client, "kakao"))
    assert (await _callback(client, back)).status_code == 200
    replay = await _callback(client, back)
    assert_problem(replay, 400)


async def test_callback_must_come_from_the_browser_that_started_the_sign_in(
    client: AsyncClient, app: FastAPI
) -> None:
    """A (code, state) pair is not a bearer credential: opened in another browser (login CSRF:
    the attacker's pair in the victim's browser; or a leaked callback URL replayed by someone
    else) it signs no one in. A cookie set by /authorize binds the state to its browser
    (RFC 6749 §10.12, RFC 9700 §4.7.1); PKCE cannot, its verifier never leaves our server."""
    to_provider = await client.get("/api/v1/auth/kakao/authorize")
    back = await _provider_redirect(to_provider.headers["location"])
    async with client_for_app(app, ip="198.51.100.7") as other_browser:
        assert_problem(await _callback(other_browser, back), 400)
    # The attempt did not spend the state: the browser that started the sign-in finishes it.
    assert (await _callback(client, back)).status_code == 200
    cookie = to_provider.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert "path=/api/v1/auth/kakao/callback" in cookie


async def test_head_neither_starts_a_sign_in_nor_spends_its_state(client: AsyncClient) -> None:
    """A link checker's HEAD on the callback must leave the state for the user's browser."""
    start = await client.head("/api/v1/auth/kakao/authorize")
    assert (start.status_code, start.headers["allow"]) == (405, "GET")
    assert "location" not in start.headers
    back = urlsplit(await _provider_redirect(await _authorize(client, "kakao")))
    head = await client.head(f"{back.path}?{back.query}")
    assert (head.status_code, head.headers["allow"]) == (405, "GET")
    assert (await client.get(f"{back.path}?{back.query}")).status_code == 200


async def test_unknown_state_is_refused(client: AsyncClient) -> None:
    back = await _provider_redirect(await _authorize(client, "naver"))
    code = _query(back)["code"]
    forged = await client.get(
        "/api/v1/auth/naver/callback", params={"code": code, "state": "not-a-state-we-issued"}
    )
    assert_problem(forged, 400)


async def test_state_of_another_provider_is_refused(client: AsyncClient) -> None:
    back = await _provider_redirect(await _authorize(client, "kakao"))
    crossed = await client.get("/api/v1/auth/naver/callback", params=_query(back))
    assert_problem(crossed, 400)


async def test_code_injected_into_another_flow_fails_pkce(client: AsyncClient) -> None:
    """An attacker's code (bound to the attacker's PKCE verifier) pasted into a victim's flow:
    we send the victim's verifier, the provider refuses, no tokens are issued."""
    attacker_back = await _provider_redirect(await _authorize(client, "google"))
    victim_to_provider = await _authorize(client, "google")
    victim_state = _query(victim_to_provider)["state"]
    injected = await client.get(
        "/api/v1/auth/google/callback",
        params={"code": _query(attacker_back)["code"], "state": victim_state},
    )
    body = assert_problem(injected, 401)
    assert "invalid_grant" in body["detail"]


async def test_redirect_uri_must_be_on_the_allow_list(
    client: AsyncClient, local_provider: LocalOAuthProvider
) -> None:
    evil = await client.get(
        "/api/v1/auth/kakao/authorize", params={"redirect_uri": "https://evil.example/cb"}
    )
    assert_problem(evil, 400)
    # Registered at the provider but not on our allow-list: still refused.
    not_ours = await client.get(
        "/api/v1/auth/kakao/authorize",
        params={"redirect_uri": "http://auth.test/elsewhere/kakao"},
    )
    assert_problem(not_ours, 400)
    # A prefix of an allowed value is not an allowed value.
    prefixed = await client.get(
        "/api/v1/auth/kakao/authorize", params={"redirect_uri": callback_url("kakao") + ".evil"}
    )
    assert_problem(prefixed, 400)
    allowed = await client.get(
        "/api/v1/auth/kakao/authorize", params={"redirect_uri": callback_url("kakao")}
    )
    assert allowed.status_code == 302


async def test_provider_error_and_unknown_provider(client: AsyncClient) -> None:
    to_provider = await _authorize(client, "naver")
    state = _query(to_provider)["state"]
    denied = await client.get(
        "/api/v1/auth/naver/callback", params={"state": state, "error": "access_denied"}
    )
    assert_problem(denied, 401)
    assert_problem(await client.get("/api/v1/auth/facebook/authorize"), 404)


async def test_providers_lists_the_enabled_ones(client: AsyncClient) -> None:
    body = (await client.get("/api/v1/auth/providers")).json()
    assert body == {"providers": ["kakao", "naver", "google"], "dev_login": True}


@pytest.mark.parametrize(
    "overrides",
    [{"nonce": "replayed-nonce"}, {"aud": "another-client"}, {"iss": "https://evil.example"}],
    ids=["nonce", "aud", "iss"],
)
async def test_google_id_token_from_the_code_exchange_is_checked(
    client: AsyncClient, local_provider: LocalOAuthProvider, overrides: dict[str, Any]
) -> None:
    local_provider.id_token_overrides = overrides
    try:
        back = await _provider_redirect(await _authorize(client, "google"))
        assert_problem(await _callback(client, back), 401)
    finally:
        local_provider.id_token_overrides = {}


@pytest.mark.parametrize(
    "answer",
    [
        HTMLResponse("<html>Service temporarily unavailable</html>"),
        JSONResponse({"token_type": "bearer", "expires_in": 3600}),
        JSONResponse({"access_token": None, "token_type": "bearer"}),
    ],
    ids=["a-page", "no-access-token", "null-access-token"],
)
async def test_a_code_exchange_answered_without_a_token_is_refused(
    client: AsyncClient, local_provider: LocalOAuthProvider, answer: Response
) -> None:
    local_provider.token_answer_override = answer
    try:
        back = await _provider_redirect(await _authorize(client, "kakao"))
        assert_problem(await _callback(client, back), 401)
    finally:
        local_provider.token_answer_override = None


async def test_concurrent_first_sign_ins_make_one_user(client: AsyncClient, app: FastAPI) -> None:
    subject = f"racer-{uuid.uuid4().hex[:8]}"
    body = {"subject": subject, "nickname": "동시"}
    answers = await asyncio.gather(
        *(client.post("/api/v1/auth/dev/login", json=body) for _ in range(10))
    )
    user_ids = {a.json()["user"]["id"] for a in answers}
    assert len(user_ids) == 1, user_ids
    assert sum(a.json()["user"]["is_new"] for a in answers) == 1
    registered = await registered_payloads(app)
    assert [p["user_id"] for p in registered].count(user_ids.pop()) == 1


async def test_unreachable_token_endpoint_is_a_502(
    make_app: AppFactory, local_provider: LocalOAuthProvider
) -> None:
    async with (
        make_app(
            kakao_client_id="kakao-client",
            kakao_client_secret="kakao-secret",
            kakao_app_id=1234,
            kakao_authorize_url=f"{local_provider.base_url}/kakao/authorize",
            kakao_token_url="http://127.0.0.1:9/token",  # nothing listens on the discard port
        ) as broken,
        client_for_app(broken) as client,
    ):
        back = await _provider_redirect(await _authorize(client, "kakao"))
        assert_problem(await _callback(client, back), 502)
