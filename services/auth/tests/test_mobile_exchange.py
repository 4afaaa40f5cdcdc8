"""The mobile exchange: the token a native SDK gave the app is checked with its provider (recorded
responses in the providers' documented shapes, served by respx at the real addresses)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from auth_test_helpers import AppFactory, assert_problem, client_for_app, registered_payloads
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import RSAKey

from ecosort_auth.config import Settings
from ecosort_auth.providers import ProviderRefused, provider_config, verify_mobile_token
from ecosort_common.security import JwksCache

FIXTURES = Path(__file__).parent / "fixtures"
KAKAO_ME = "https://kapi.kakao.com/v2/user/me"
KAKAO_TOKEN_INFO = "https://kapi.kakao.com/v1/user/access_token_info"
NAVER_ME = "https://openapi.naver.com/v1/nid/me"
NAVER_VERIFY = "https://openapi.naver.com/v1/nid/verify?info=true"
NAVER_CLIENT = "jyvqXeaVOVmV"  # the client id in naver_token_verify.json
GOOGLE_CERTS = "https://www.googleapis.com/oauth2/v3/certs"
GOOGLE_WEB_CLIENT = "1234987819200.apps.googleusercontent.com"
GOOGLE_ANDROID_CLIENT = "555-android.apps.googleusercontent.com"


def recorded(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
async def mobile_app(make_app: AppFactory) -> AsyncIterator[FastAPI]:
    """Default (real) provider addresses, which respx answers."""
    async with make_app(
        kakao_client_id="kakao-rest-key",
        kakao_app_id=1234,
        naver_client_id=NAVER_CLIENT,
        naver_client_secret="naver-secret",
        google_client_id=GOOGLE_WEB_CLIENT,
        google_mobile_client_ids=[GOOGLE_ANDROID_CLIENT],
    ) as application:
        yield application


@pytest.fixture(scope="module")
def google_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "google-2026-11"})


def google_id_token(key: RSAKey, **overrides: Any) -> str:
    now = int(time.time())
    claims = {**recorded("google_id_token_claims.json"), "iat": now, "exp": now + 3600}
    claims.update(overrides)
    return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "JWT"}, claims, key)


def google_certs(key: RSAKey) -> dict[str, Any]:
    return {"keys": [{**key.as_dict(private=False), "alg": "RS256", "use": "sig"}]}


async def _exchange(app: FastAPI, provider: str, body: dict[str, str]) -> httpx.Response:
    async with client_for_app(app) as client:
        return await client.post(f"/api/v1/auth/{provider}/token", json=body)


async def test_kakao_access_token_is_checked_with_kakao(mobile_app: FastAPI) -> None:
    with respx.mock(assert_all_called=True) as mock:
        info = mock.get(KAKAO_TOKEN_INFO).respond(json=recorded("kakao_access_token_info.json"))
        me = mock.get(KAKAO_ME).respond(json=recorded("kakao_user_me.json"))
        answer = await _exchange(mobile_app, "kakao", {"access_token": "kakao-sdk-token"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["user"]["nickname"] == "홍길동"
    assert answer.headers["cache-control"] == "no-store"  # it carries our tokens
    assert me.calls.last.request.headers["authorization"] == "Bearer kakao-sdk-token"
    assert info.calls.last.request.headers["authorization"] == "Bearer kakao-sdk-token"
    with respx.mock() as mock:
        mock.get(KAKAO_TOKEN_INFO).respond(json=recorded("kakao_access_token_info.json"))
        mock.get(KAKAO_ME).respond(json=recorded("kakao_user_me.json"))
        again = await _exchange(mobile_app, "kakao", {"access_token": "another-sdk-token"})
    assert again.json()["user"]["id"] == answer.json()["user"]["id"]


async def test_kakao_refusals(mobile_app: FastAPI) -> None:
    with respx.mock() as mock:
        mock.get(KAKAO_TOKEN_INFO).respond(401, json=recorded("kakao_invalid_token.json"))
        assert_problem(await _exchange(mobile_app, "kakao", {"access_token": "bad"}), 401)
    other_app = {**recorded("kakao_access_token_info.json"), "app_id": 9999}
    no_app = {k: v for k, v in recorded("kakao_access_token_info.json").items() if k != "app_id"}
    for info in (other_app, no_app):
        with respx.mock(assert_all_called=False) as mock:
            mock.get(KAKAO_TOKEN_INFO).respond(json=info)
            me = mock.get(KAKAO_ME).respond(json=recorded("kakao_user_me.json"))
            assert_problem(await _exchange(mobile_app, "kakao", {"access_token": "x"}), 401)
            assert not me.called
    with respx.mock() as mock:
        mock.get(KAKAO_TOKEN_INFO).mock(side_effect=httpx.ConnectError("down"))
        assert_problem(await _exchange(mobile_app, "kakao", {"access_token": "x"}), 502)
    assert_problem(await _exchange(mobile_app, "kakao", {"id_token": "wrong-field"}), 422)


async def test_kakao_app_check_runs_even_when_settings_skipped_validation() -> None:
    # model_copy skips validators: the check itself must not read a missing app id as "any app".
    settings = Settings(kakao_client_id="kakao-rest-key", kakao_app_id=1234).model_copy(
        update={"kakao_app_id": None}
    )
    config = provider_config(settings, "kakao")
    assert config is not None
    with respx.mock(assert_all_called=False) as mock:
        info = mock.get(KAKAO_TOKEN_INFO).respond(json=recorded("kakao_access_token_info.json"))
        me = mock.get(KAKAO_ME).respond(json=recorded("kakao_user_me.json"))
        with pytest.raises(ProviderRefused, match="another app"):
            await verify_mobile_token(
                settings, config, JwksCache(GOOGLE_CERTS, cache_seconds=3600), "kakao-token"
            )
    assert info.called
    assert not me.called


async def _registered(app: FastAPI, user_id: str) -> dict[str, Any]:
    """The `user.registered` payload staged for `user_id`."""
    payloads = await registered_payloads(app)
    [payload] = [p for p in payloads if p["user_id"] == user_id]
    found: dict[str, Any] = payload
    return found


async def test_kakao_email_taken_by_another_account_is_not_kept(mobile_app: FastAPI) -> None:
    """Kakao: `is_email_valid` is false once the address has been taken by another Kakao account
    (it then comes masked): that address is not this user's, even with `is_email_verified`."""
    me = recorded("kakao_user_me.json")
    me["id"] = 3141592654
    me["kakao_account"] |= {"is_email_valid": False, "email": "sa***@sample.com"}
    info = {**recorded("kakao_access_token_info.json"), "id": me["id"]}
    with respx.mock() as mock:
        mock.get(KAKAO_TOKEN_INFO).respond(json=info)
        mock.get(KAKAO_ME).respond(json=me)
        answer = await _exchange(mobile_app, "kakao", {"access_token": "kakao-sdk-token"})
    assert answer.status_code == 200, answer.text
    registered = await _registered(mobile_app, answer.json()["user"]["id"])
    assert registered["email"] is None
    assert registered["nickname"] == "홍길동"


@pytest.mark.parametrize("provider", ["kakao", "naver"])
async def test_refused_optional_consent_still_signs_in(mobile_app: FastAPI, provider: str) -> None:
    """No e-mail and no nickname (the user refused both optional items): signed in by the
    provider's id, with neither."""
    with respx.mock() as mock:
        if provider == "kakao":
            mock.get(KAKAO_TOKEN_INFO).respond(json=recorded("kakao_access_token_info.json"))
            mock.get(KAKAO_ME).respond(
                json={
                    "id": 2718281828,
                    "connected_at": "2026-04-11T01:45:28Z",
                    "kakao_account": {
                        "profile_nickname_needs_agreement": True,
                        "email_needs_agreement": True,
                    },
                }
            )
        else:
            mock.get(NAVER_VERIFY).respond(json=recorded("naver_token_verify.json"))
            mock.get(NAVER_ME).respond(
                json={"resultcode": "00", "message": "success", "response": {"id": "27182818"}}
            )
        answer = await _exchange(mobile_app, provider, {"access_token": "sdk-token"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["user"]["nickname"] is None
    registered = await _registered(mobile_app, answer.json()["user"]["id"])
    assert (registered["email"], registered["nickname"]) == (None, None)


def naver_verified(**changes: Any) -> dict[str, Any]:
    """Naver's documented token-verification answer (GET /v1/nid/verify?info=true)."""
    answer = recorded("naver_token_verify.json")
    answer["response"] |= changes
    return answer


async def test_naver_access_token_is_checked_with_naver(mobile_app: FastAPI) -> None:
    with respx.mock(assert_all_called=True) as mock:
        verify = mock.get(NAVER_VERIFY).respond(json=recorded("naver_token_verify.json"))
        me = mock.get(NAVER_ME).respond(json=recorded("naver_nid_me.json"))
        answer = await _exchange(mobile_app, "naver", {"access_token": "naver-sdk-token"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["user"]["nickname"] == "OpenAPI"
    assert verify.calls.last.request.headers["authorization"] == "Bearer naver-sdk-token"
    assert verify.calls.last.request.url.params["info"] == "true"
    assert me.calls.last.request.headers["authorization"] == "Bearer naver-sdk-token"
    with respx.mock() as mock:
        mock.get(NAVER_VERIFY).respond(json=recorded("naver_token_verify.json"))
        mock.get(NAVER_ME).respond(401, json=recorded("naver_invalid_token.json"))
        assert_problem(await _exchange(mobile_app, "naver", {"access_token": "bad"}), 401)
    with respx.mock() as mock:
        mock.get(NAVER_VERIFY).respond(json=recorded("naver_token_verify.json"))
        mock.get(NAVER_ME).respond(200, text="<html>maintenance</html>")
        assert_problem(await _exchange(mobile_app, "naver", {"access_token": "x"}), 401)
    with respx.mock() as mock:
        mock.get(NAVER_VERIFY).respond(json=recorded("naver_token_verify.json"))
        mock.get(NAVER_ME).respond(200, json={"resultcode": "00", "response": {}})
        assert_problem(await _exchange(mobile_app, "naver", {"access_token": "x"}), 401)
    with respx.mock() as mock:
        mock.get(NAVER_VERIFY).respond(json=recorded("naver_token_verify.json"))
        # Naver also reports refusals in the body of a 200.
        mock.get(NAVER_ME).respond(200, json=recorded("naver_invalid_token.json"))
        assert_problem(await _exchange(mobile_app, "naver", {"access_token": "bad"}), 401)


@pytest.mark.parametrize(
    ("status", "verified"),
    [
        (200, naver_verified(client_id="someone-elses-naver-app")),
        (200, naver_verified(client_id=None)),
        (200, {"resultcode": "00", "message": "success"}),
        (200, recorded("naver_invalid_token.json")),  # a refusal in the body of a 200
        (401, recorded("naver_invalid_token.json")),
    ],
    ids=["other-client", "no-client-id", "no-response", "refused-in-200", "refused-401"],
)
async def test_naver_token_of_another_app_is_refused(
    mobile_app: FastAPI, status: int, verified: dict[str, Any]
) -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock.get(NAVER_VERIFY).respond(status, json=verified)
        me = mock.get(NAVER_ME).respond(json=recorded("naver_nid_me.json"))
        assert_problem(await _exchange(mobile_app, "naver", {"access_token": "x"}), 401)
    assert not me.called


async def test_naver_verification_unreachable_is_a_502(mobile_app: FastAPI) -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock.get(NAVER_VERIFY).mock(side_effect=httpx.ConnectError("down"))
        me = mock.get(NAVER_ME).respond(json=recorded("naver_nid_me.json"))
        assert_problem(await _exchange(mobile_app, "naver", {"access_token": "x"}), 502)
    assert not me.called


async def test_google_id_token_is_checked_against_googles_keys(
    mobile_app: FastAPI, google_key: RSAKey
) -> None:
    with respx.mock() as mock:
        mock.get(GOOGLE_CERTS).respond(json=google_certs(google_key))
        web = await _exchange(mobile_app, "google", {"id_token": google_id_token(google_key)})
        android = await _exchange(
            mobile_app,
            "google",
            {"id_token": google_id_token(google_key, aud=GOOGLE_ANDROID_CLIENT)},
        )
    assert web.status_code == 200, web.text
    assert web.json()["user"]["nickname"] == "Jane Smith"
    assert android.json()["user"]["id"] == web.json()["user"]["id"]


async def test_google_id_token_with_either_documented_issuer_is_accepted(
    mobile_app: FastAPI, google_key: RSAKey
) -> None:
    """Google's ID tokens name `https://accounts.google.com` or `accounts.google.com`."""
    with respx.mock(assert_all_called=False) as mock:
        mock.get(GOOGLE_CERTS).respond(json=google_certs(google_key))
        for issuer in ("https://accounts.google.com", "accounts.google.com"):
            token = google_id_token(google_key, iss=issuer)
            answer = await _exchange(mobile_app, "google", {"id_token": token})
            assert answer.status_code == 200, (issuer, answer.text)


@pytest.mark.parametrize(
    "overrides",
    [
        {"aud": "someone-elses-app.apps.googleusercontent.com"},
        {"iss": "https://accounts.evil.example"},
        {"exp": int(time.time()) - 60},
    ],
    ids=["wrong-audience", "wrong-issuer", "expired"],
)
async def test_google_id_token_refusals(
    mobile_app: FastAPI, google_key: RSAKey, overrides: dict[str, Any]
) -> None:
    # Google's keys may already be cached from an earlier exchange: the route may go unused.
    with respx.mock(assert_all_called=False) as mock:
        mock.get(GOOGLE_CERTS).respond(json=google_certs(google_key))
        refused = await _exchange(
            mobile_app, "google", {"id_token": google_id_token(google_key, **overrides)}
        )
    assert_problem(refused, 401)


async def test_google_id_token_from_a_clock_a_little_ahead_of_ours_is_accepted(
    mobile_app: FastAPI, google_key: RSAKey
) -> None:
    """The app sends Google's ID token the moment Google issued it; our clock a few seconds
    behind Google's must not refuse it as issued in the future (google-auth's "Token used too
    early")."""
    ahead = google_id_token(google_key, iat=int(time.time()) + 5)
    with respx.mock(assert_all_called=False) as mock:
        mock.get(GOOGLE_CERTS).respond(json=google_certs(google_key))
        answer = await _exchange(mobile_app, "google", {"id_token": ahead})
    assert answer.status_code == 200, answer.text


async def test_a_profile_longer_than_our_columns_still_signs_in(
    mobile_app: FastAPI, google_key: RSAKey
) -> None:
    """A provider's name over our 100 characters, with a NUL, and an email over 320: the person
    signs in (the name cut, the email dropped) instead of a 500 at every attempt."""
    token = google_id_token(
        google_key,
        sub="long-profile-1",
        name="\x00" + "김" * 500,
        email="a" * 320 + "@example.com",
        email_verified=True,
    )
    with respx.mock(assert_all_called=False) as mock:
        mock.get(GOOGLE_CERTS).respond(json=google_certs(google_key))
        answer = await _exchange(mobile_app, "google", {"id_token": token})
    assert answer.status_code == 200, answer.text
    assert answer.json()["user"]["nickname"] == "김" * 100


async def test_google_id_token_signed_by_another_key_is_refused(
    mobile_app: FastAPI, google_key: RSAKey
) -> None:
    impostor = RSAKey.generate_key(2048, parameters={"kid": str(google_key.kid)})
    with respx.mock(assert_all_called=False) as mock:
        mock.get(GOOGLE_CERTS).respond(json=google_certs(google_key))
        refused = await _exchange(mobile_app, "google", {"id_token": google_id_token(impostor)})
    assert_problem(refused, 401)


async def test_disabled_provider_is_not_found(make_app: AppFactory) -> None:
    async with make_app() as bare:
        assert_problem(await _exchange(bare, "kakao", {"access_token": "x"}), 404)
        async with client_for_app(bare) as client:
            providers = (await client.get("/api/v1/auth/providers")).json()
            assert providers["providers"] == []
