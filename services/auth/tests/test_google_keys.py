"""Google's key cache asks Google at most once per interval after any attempt, one fetch at a
time, whatever kids the ID tokens it is shown name: forged kids must not amplify into calls to
Google, least of all while Google is slow or down."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from auth_local_provider import LocalOAuthProvider, ProviderUser
from auth_test_helpers import AppFactory, assert_problem, client_for_app
from joserfc import jwt
from joserfc.jwk import RSAKey

from ecosort_auth.config import Settings
from ecosort_auth.providers import ProviderRefused, google_keys, verify_google_id_token
from ecosort_common import security
from ecosort_common.security import JwksCache

# Short enough to wait out in a test, long enough for a burst of sign-ins to fit inside it.
TEST_REFRESH_INTERVAL = 1.0
AUDIENCE = "google-client"


@pytest.fixture
def google(
    local_provider: LocalOAuthProvider, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalOAuthProvider]:
    monkeypatch.setattr(security, "MIN_REFRESH_INTERVAL_SECONDS", TEST_REFRESH_INTERVAL)
    yield local_provider
    local_provider.jwks_down = False


@pytest.fixture(scope="module")
def forger() -> RSAKey:
    return RSAKey.generate_key(2048)


def _genuine(google: LocalOAuthProvider) -> str:
    return google.id_token(ProviderUser(subject="keys-test", nickname="키"), AUDIENCE, None)


def _forged(google: LocalOAuthProvider, forger: RSAKey, kid: str) -> str:
    claims = jwt.decode(_genuine(google), google.signing_key).claims
    return jwt.encode({"alg": "RS256", "kid": kid}, claims, forger, algorithms=["RS256"])


async def _outcome(settings: Settings, keys: JwksCache, id_token: str) -> str:
    try:
        await verify_google_id_token(settings, keys, id_token, audiences=[AUDIENCE], nonce=None)
    except ProviderRefused:
        return "refused"
    except httpx.HTTPError:
        return "unavailable"
    return "signed in"


async def test_forged_kids_cost_one_fetch_per_interval(
    google: LocalOAuthProvider, forger: RSAKey, web_settings: Settings
) -> None:
    keys = google_keys(web_settings)
    before = google.jwks_requests
    assert await _outcome(web_settings, keys, _genuine(google)) == "signed in"
    assert google.jwks_requests - before == 1
    forged = [_forged(google, forger, f"forged-{i}") for i in range(20)]
    outcomes = await asyncio.gather(*(_outcome(web_settings, keys, t) for t in forged))
    assert outcomes == ["refused"] * 20
    assert google.jwks_requests - before == 1, "an unknown kid within the interval asks nobody"
    await asyncio.sleep(TEST_REFRESH_INTERVAL + 0.1)
    outcomes = await asyncio.gather(*(_outcome(web_settings, keys, t) for t in forged))
    assert outcomes == ["refused"] * 20
    assert google.jwks_requests - before == 2, "only the first forged kid reaches Google"
    # Known kids keep verifying from the keys already cached, without asking Google either.
    assert await _outcome(web_settings, keys, _genuine(google)) == "signed in"
    assert google.jwks_requests - before == 2


async def test_without_keys_a_down_google_is_asked_once_per_interval(
    google: LocalOAuthProvider, web_settings: Settings
) -> None:
    keys = google_keys(web_settings)
    before = google.jwks_requests
    google.jwks_down = True
    outcomes = [await _outcome(web_settings, keys, _genuine(google)) for _ in range(5)]
    assert outcomes == ["unavailable"] * 5
    assert google.jwks_requests - before == 1, "the failed attempt counts too"
    google.jwks_down = False
    await asyncio.sleep(TEST_REFRESH_INTERVAL + 0.1)
    assert await _outcome(web_settings, keys, _genuine(google)) == "signed in"
    assert google.jwks_requests - before == 2


async def test_a_mobile_sign_in_while_googles_keys_are_out_of_reach_is_a_502(
    google: LocalOAuthProvider, web_settings: Settings, make_app: AppFactory
) -> None:
    google.jwks_down = True
    before = google.jwks_requests
    async with (
        make_app(
            google_client_id=AUDIENCE,
            google_jwks_url=web_settings.google_jwks_url,
            google_issuers=web_settings.google_issuers,
        ) as app,
        client_for_app(app) as client,
    ):
        for _ in range(3):
            answer = await client.post(
                "/api/v1/auth/google/token", json={"id_token": _genuine(google)}
            )
            assert_problem(answer, 502)
    assert google.jwks_requests - before == 1
