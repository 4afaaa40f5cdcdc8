"""Our access tokens, the JWKS, key rotation, and what ecosort_common.security refuses.

Refusals are checked on auth's own protected route (GET /sessions), which verifies through
ecosort_common.security exactly as every other service does."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from typing import Any

import pytest
from auth_test_helpers import (
    AUDIENCE,
    ISSUER,
    assert_problem,
    b64url,
    b64url_json,
    bearer,
    dev_login,
    unverified_parts,
)
from fastapi import FastAPI
from httpx import AsyncClient
from joserfc import jwt
from joserfc.jwk import ECKey

from ecosort_auth.keys import ActiveKey, rotate_keys
from ecosort_auth.tokens import issue_access_token

PROTECTED = "/api/v1/auth/sessions"


async def _signed_with_current_key(app: FastAPI, **overrides: Any) -> str:
    """A token signed with auth's real current key, with some claims changed."""
    async with app.state.sessionmaker() as db:
        key = await app.state.keyring.current(db)
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(uuid.uuid4()),
        "sid": str(uuid.uuid4()),
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key.key)


async def test_access_token_claims_and_header(client: AsyncClient) -> None:
    tokens = await dev_login(client, "claims-check")
    header, claims = unverified_parts(tokens["access_token"])
    assert header["alg"] == "ES256" and header["kid"]
    assert set(claims) == {"iss", "aud", "sub", "sid", "exp", "iat", "jti"}
    assert claims["iss"] == ISSUER and claims["aud"] == AUDIENCE
    assert claims["sub"] == tokens["user"]["id"]
    assert claims["exp"] - claims["iat"] == 900
    jwks = (await client.get("/api/v1/auth/jwks.json")).json()
    assert header["kid"] in {k["kid"] for k in jwks["keys"]}
    assert all("d" not in k for k in jwks["keys"])  # never a private half


async def test_rotation_logs_nobody_out(
    rotating_client: AsyncClient, rotating_app: FastAPI
) -> None:
    jwks_before = (await rotating_client.get("/api/v1/auth/jwks.json")).json()
    before = await dev_login(rotating_client, "rotation-check")
    old_kid = unverified_parts(before["access_token"])[0]["kid"]
    async with rotating_app.state.sessionmaker() as db, db.begin():
        new_kid = await rotate_keys(db, rotating_app.state.settings.key_encryption_key)
    # The key that now signs was already published before the rotation.
    assert new_kid in {k["kid"] for k in jwks_before["keys"]} and new_kid != old_kid
    published = {
        k["kid"] for k in (await rotating_client.get("/api/v1/auth/jwks.json")).json()["keys"]
    }
    assert {old_kid, new_kid} < published and len(published) == 3
    # The token signed before the rotation still works; new ones use the new key.
    assert (
        await rotating_client.get(PROTECTED, headers=bearer(before["access_token"]))
    ).status_code == 200
    after = await dev_login(rotating_client, "rotation-check")
    assert unverified_parts(after["access_token"])[0]["kid"] == new_kid
    assert (
        await rotating_client.get(PROTECTED, headers=bearer(after["access_token"]))
    ).status_code == 200
    refreshed = await rotating_client.post(
        "/api/v1/auth/refresh", json={"refresh_token": before["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    # A second rotation retires the first key: it is no longer published.
    async with rotating_app.state.sessionmaker() as db, db.begin():
        newest = await rotate_keys(db, rotating_app.state.settings.key_encryption_key)
    published = {
        k["kid"] for k in (await rotating_client.get("/api/v1/auth/jwks.json")).json()["keys"]
    }
    assert old_kid not in published and {new_kid, newest} < published


async def test_valid_token_is_accepted(client: AsyncClient, app: FastAPI) -> None:
    token = await _signed_with_current_key(app)
    assert (await client.get(PROTECTED, headers=bearer(token))).status_code == 200


@pytest.mark.parametrize(
    "overrides",
    [
        {"iss": "https://someone-else.example"},
        {"aud": "another-audience"},
        {"exp": int(time.time()) - 120, "iat": int(time.time()) - 1000},
    ],
    ids=["wrong-iss", "wrong-aud", "expired"],
)
async def test_claims_that_do_not_match_are_refused(
    client: AsyncClient, app: FastAPI, overrides: dict[str, Any]
) -> None:
    token = await _signed_with_current_key(app, **overrides)
    assert_problem(await client.get(PROTECTED, headers=bearer(token)), 401)


async def test_a_token_issued_a_moment_ahead_of_the_verifiers_clock_is_accepted(
    client: AsyncClient, app: FastAPI
) -> None:
    """Clocks drift: a token used the moment auth issued it, at a service whose clock is a few
    seconds behind auth's, is not "issued in the future". Far ahead it still is, and expiry
    stays exact."""
    now = int(time.time())
    ahead = await _signed_with_current_key(app, iat=now + 5, nbf=now + 5)
    assert (await client.get(PROTECTED, headers=bearer(ahead))).status_code == 200
    for claims in ({"iat": now + 3600}, {"exp": now - 1, "iat": now - 901}):
        token = await _signed_with_current_key(app, **claims)
        assert_problem(await client.get(PROTECTED, headers=bearer(token)), 401)


async def test_alg_none_is_refused(client: AsyncClient) -> None:
    real = (await dev_login(client, "alg-none"))["access_token"]
    header, claims = unverified_parts(real)
    unsigned = f"{b64url_json({'alg': 'none', 'kid': header['kid']})}.{b64url_json(claims)}."
    assert_problem(await client.get(PROTECTED, headers=bearer(unsigned)), 401)


async def test_hs256_signed_with_the_public_key_is_refused(client: AsyncClient) -> None:
    """The classic key-confusion forgery: HMAC keyed with the published public key."""
    real = (await dev_login(client, "key-confusion"))["access_token"]
    header, claims = unverified_parts(real)
    jwks = (await client.get("/api/v1/auth/jwks.json")).json()
    public = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    forged_claims = {**claims, "sub": str(uuid.uuid4())}
    for secret in (
        ECKey.import_key(public).as_pem(private=False),
        b64url_json(public).encode(),
    ):
        signing_input = f"{b64url_json({'alg': 'HS256', 'kid': header['kid']})}." + b64url_json(
            forged_claims
        )
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        forged = f"{signing_input}.{b64url(signature)}"
        assert_problem(await client.get(PROTECTED, headers=bearer(forged)), 401)


async def test_tampered_payload_is_refused(client: AsyncClient) -> None:
    real = (await dev_login(client, "tamper"))["access_token"]
    header_b64, _, signature = real.split(".")
    _, claims = unverified_parts(real)
    tampered = f"{header_b64}.{b64url_json({**claims, 'sub': str(uuid.uuid4())})}.{signature}"
    assert_problem(await client.get(PROTECTED, headers=bearer(tampered)), 401)


async def test_unknown_kid_is_refused(client: AsyncClient) -> None:
    stranger = ECKey.generate_key("P-256", parameters={"kid": "not-one-of-ours"})
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(uuid.uuid4()),
        "sid": str(uuid.uuid4()),
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode({"alg": "ES256", "kid": "not-one-of-ours"}, claims, stranger)
    assert_problem(await client.get(PROTECTED, headers=bearer(token)), 401)


async def test_our_kid_with_a_strangers_signature_is_refused(
    client: AsyncClient, app: FastAPI
) -> None:
    async with app.state.sessionmaker() as db:
        kid = (await app.state.keyring.current(db)).kid
    stranger = ECKey.generate_key("P-256", parameters={"kid": kid})
    token = issue_access_token(
        ActiveKey(kid=kid, key=stranger),
        issuer=ISSUER,
        audience=AUDIENCE,
        user_id=uuid.uuid4(),
        session_id=uuid.uuid4(),
        lifetime_seconds=600,
    )
    assert_problem(await client.get(PROTECTED, headers=bearer(token)), 401)


async def test_revoked_session_stops_working_at_once(client: AsyncClient) -> None:
    tokens = await dev_login(client, "revoked")
    assert (await client.get(PROTECTED, headers=bearer(tokens["access_token"]))).status_code == 200
    logout = await client.post("/api/v1/auth/logout", headers=bearer(tokens["access_token"]))
    assert logout.status_code == 204
    body = assert_problem(await client.get(PROTECTED, headers=bearer(tokens["access_token"])), 401)
    assert "revoked" in body["detail"]
    refused = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert_problem(refused, 401)


async def test_missing_or_malformed_bearer_is_refused(client: AsyncClient) -> None:
    assert_problem(await client.get(PROTECTED), 401)
    assert_problem(await client.get(PROTECTED, headers=bearer("not.a.jwt")), 401)
