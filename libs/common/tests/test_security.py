"""Access tokens are accepted only when auth really issued them for us and they are still valid."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from joserfc import jws, jwt
from joserfc.jwk import ECKey

from ecosort_common import security
from ecosort_common.aio import cancel_and_wait
from ecosort_common.errors import Problem
from ecosort_common.revocation import REVOKED_SESSIONS, RevocationWatcher, revoke_sessions
from ecosort_common.security import TokenVerifier
from ecosort_common.subscription import Subscription
from ecosort_common.testing import TokenIssuer

PATH = "/api/v1/demo/me"


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def _status(client: AsyncClient, token: str) -> tuple[int, str]:
    response = await client.get(PATH, headers={"Authorization": f"Bearer {token}"})
    if response.status_code != 200:
        assert response.headers["content-type"] == "application/problem+json"
    return response.status_code, response.text


async def test_a_valid_token_is_accepted(client: AsyncClient, token_issuer: TokenIssuer) -> None:
    user_id = uuid.uuid4()
    response = await client.get(
        PATH, headers={"Authorization": f"Bearer {token_issuer.token(user_id, session_id='s1')}"}
    )
    assert response.status_code == 200
    assert response.json() == {"user_id": str(user_id), "sid": "s1"}


async def test_missing_token_is_401_with_challenge(client: AsyncClient) -> None:
    response = await client.get(PATH)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_alg_none_is_refused(client: AsyncClient, token_issuer: TokenIssuer) -> None:
    good = token_issuer.token()
    _, payload, _ = good.split(".")
    forged = f"{_b64({'alg': 'none', 'kid': token_issuer.kid})}.{payload}."
    assert (await _status(client, forged))[0] == 401


async def test_hs256_signed_with_the_public_key_is_refused(
    client: AsyncClient, token_issuer: TokenIssuer
) -> None:
    # The classic confusion attack: the public key, which anyone can fetch, used as an HMAC secret.
    public_pem = token_issuer.key.as_pem(private=False)
    claims = jwt.decode(token_issuer.token(), token_issuer.key).claims
    signing_input = f"{_b64({'alg': 'HS256', 'kid': token_issuer.kid})}.{_b64(claims)}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"
    assert (await _status(client, forged))[0] == 401


@pytest.mark.parametrize(
    "overrides",
    [{"iss": "https://evil.example"}, {"aud": "someone-else"}, {"sub": "not-a-uuid"}],
    ids=["wrong-iss", "wrong-aud", "bad-sub"],
)
async def test_wrong_claims_are_refused(
    client: AsyncClient, token_issuer: TokenIssuer, overrides: dict[str, Any]
) -> None:
    assert (await _status(client, token_issuer.token(**overrides)))[0] == 401


@pytest.mark.parametrize("missing", ["exp", "sub", "sid", "jti"])
async def test_a_token_missing_a_required_claim_is_refused(
    client: AsyncClient, token_issuer: TokenIssuer, missing: str
) -> None:
    """Signed by auth's own key, yet without a claim every access token carries: a 401 (not a
    token that never expires, nor one whose session cannot be revoked, nor a 500)."""
    claims = jwt.decode(token_issuer.token(), token_issuer.key).claims
    del claims[missing]
    token = jwt.encode({"alg": "ES256", "kid": token_issuer.kid}, claims, token_issuer.key)
    status, body = await _status(client, token)
    assert status == 401, body
    assert "missing_claim" in body


async def test_expired_token_is_refused(client: AsyncClient, token_issuer: TokenIssuer) -> None:
    token = token_issuer.token(lifetime=timedelta(seconds=-60))
    status, body = await _status(client, token)
    assert status == 401
    assert "exp" in body


async def test_a_remembered_token_is_refused_once_it_expires(
    client: AsyncClient, token_issuer: TokenIssuer
) -> None:
    token = token_issuer.token(lifetime=timedelta(seconds=2))
    assert (await _status(client, token))[0] == 200  # verified, and now remembered
    await asyncio.sleep(2.1)
    status, body = await _status(client, token)
    assert status == 401
    assert "exp" in body


async def test_tampered_payload_is_refused(client: AsyncClient, token_issuer: TokenIssuer) -> None:
    header, _, signature = token_issuer.token().split(".")
    other = jwt.decode(token_issuer.token(), token_issuer.key).claims
    other["sub"] = str(uuid.uuid4())
    assert (await _status(client, f"{header}.{_b64(other)}.{signature}"))[0] == 401


async def test_unknown_kid_is_refused(client: AsyncClient, token_issuer: TokenIssuer) -> None:
    stranger = ECKey.generate_key("P-256", parameters={"kid": "stranger"})
    claims = jwt.decode(token_issuer.token(), token_issuer.key).claims
    token = jwt.encode({"alg": "ES256", "kid": "stranger"}, claims, stranger)
    status, body = await _status(client, token)
    assert status == 401
    assert "unknown key" in body


async def test_right_kid_wrong_key_is_refused(
    client: AsyncClient, token_issuer: TokenIssuer
) -> None:
    impostor = ECKey.generate_key("P-256")
    claims = jwt.decode(token_issuer.token(), token_issuer.key).claims
    token = jwt.encode({"alg": "ES256", "kid": token_issuer.kid}, claims, impostor)
    assert (await _status(client, token))[0] == 401


async def _until_live(subscription: Subscription) -> None:
    async with asyncio.timeout(10):
        await subscription.subscribed.wait()
    assert subscription.live


async def test_revoked_session_is_refused(
    client: AsyncClient, token_issuer: TokenIssuer, app: FastAPI
) -> None:
    await _until_live(app.state.subscription)
    # Unique: the announcement channel is shared by every database of the Redis server, so a
    # test run beside this one (another checkout's) would otherwise revoke this very session.
    session_id = f"revoked-{uuid.uuid4().hex}"
    token = token_issuer.token(session_id=session_id)
    assert (await _status(client, token))[0] == 200
    await revoke_sessions(app.state.redis, [session_id], ttl_seconds=60)
    # The announcement reaches the process's own set through pub/sub: give it a moment.
    for _ in range(200):
        status, body = await _status(client, token)
        if status != 200:
            break
        await asyncio.sleep(0.01)
    assert status == 401
    assert "revoked" in body
    assert (await _status(client, token_issuer.token(session_id="another-session")))[0] == 200


async def test_revocations_made_before_start_and_without_a_subscription_count(
    app: FastAPI,
) -> None:
    redis = app.state.redis
    await redis.delete(REVOKED_SESSIONS)
    await revoke_sessions(redis, ["old-session"], ttl_seconds=60)
    # A revocation that has ended counts nowhere.
    await redis.zadd(REVOKED_SESSIONS, {"ended-session": time.time() - 1})
    subscription = Subscription(redis)
    watcher = RevocationWatcher(redis, subscription)
    # Not subscribed yet: the answer comes from Redis itself.
    assert not subscription.live
    assert await watcher.is_revoked("old-session")
    assert not await watcher.is_revoked("fine-session")
    assert not await watcher.is_revoked("ended-session")
    following = asyncio.create_task(subscription.run())
    try:
        await _until_live(subscription)
        await redis.delete(REVOKED_SESSIONS)
        # Live: answered from the set loaded at subscription, not from Redis.
        assert await watcher.is_revoked("old-session")
        assert not await watcher.is_revoked("fine-session")
        assert not await watcher.is_revoked("ended-session")
    finally:
        await cancel_and_wait(following)


async def test_a_process_that_revokes_knows_at_once(app: FastAPI) -> None:
    """Its next request must not pass on the revoked session's token while its own
    announcement is still on the way back over the subscription (auth: sign a device out, and
    that device's next call is a 401)."""
    redis = app.state.redis

    class AnnouncementsOnTheWay(Subscription):
        def _dispatch(self, channel: str, data: str) -> None:
            pass  # live, but no message has come back yet

    subscription = AnnouncementsOnTheWay(redis)
    watcher = RevocationWatcher(redis, subscription)
    following = asyncio.create_task(subscription.run())
    try:
        await _until_live(subscription)
        await watcher.revoke(["signed-out"], ttl_seconds=60)
        assert await watcher.is_revoked("signed-out")
        assert not await watcher.is_revoked("still-signed-in")
        assert await redis.zscore(REVOKED_SESSIONS, "signed-out") is not None
    finally:
        await cancel_and_wait(following)


async def test_a_revocation_keeps_the_later_end_and_drops_those_that_ended(app: FastAPI) -> None:
    redis = app.state.redis
    await redis.delete(REVOKED_SESSIONS)
    await redis.zadd(REVOKED_SESSIONS, {"ended-session": time.time() - 1})
    await revoke_sessions(redis, ["long", "short"], ttl_seconds=600)
    await revoke_sessions(redis, ["long"], ttl_seconds=60)  # e.g. logout after a reuse
    await revoke_sessions(redis, [], ttl_seconds=60)
    ends = dict(await redis.zrange(REVOKED_SESSIONS, 0, -1, withscores=True))
    assert set(ends) == {"long", "short"}, "the ended revocation was dropped"
    assert ends["long"] == ends["short"] > time.time() + 500


async def test_garbage_is_refused(client: AsyncClient) -> None:
    no_kid = jws.serialize_compact({"alg": "ES256"}, b"{}", ECKey.generate_key("P-256"))
    for token in ("abc", "a.b.c", "....", no_kid):
        assert (await _status(client, token))[0] == 401


class FlakyJwks:
    """Auth's JWKS route as verifiers see it when auth falls over: the keys while `healthy`,
    503 after; every fetch counted."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.healthy = True
        self.fetches = 0
        body = json.dumps(jwks).encode()
        flaky = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                flaky.fetches += 1
                status, payload = (200, body) if flaky.healthy else (503, b"{}")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# Short enough to wait out in a test, long enough for a burst of rejections to fit inside it.
TEST_REFRESH_INTERVAL = 1.0


@pytest.fixture
async def flaky(
    token_issuer: TokenIssuer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[FlakyJwks, TokenVerifier]]:
    monkeypatch.setattr(security, "MIN_REFRESH_INTERVAL_SECONDS", TEST_REFRESH_INTERVAL)
    jwks = FlakyJwks(token_issuer.jwks())
    verifier = TokenVerifier(
        jwks_url=jwks.url, issuer=token_issuer.issuer, audience=token_issuer.audience
    )
    yield jwks, verifier
    await verifier.aclose()
    jwks.stop()


async def _verified_status(verifier: TokenVerifier, token: str) -> int:
    try:
        await verifier.verify(token)
    except Problem as exc:
        return exc.status
    return 200


def _forged_kid(token_issuer: TokenIssuer, kid: str) -> str:
    forger = ECKey.generate_key("P-256", parameters={"kid": kid})
    claims = jwt.decode(token_issuer.token(), token_issuer.key).claims
    return jwt.encode({"alg": "ES256", "kid": kid}, claims, forger)


async def test_forged_kids_while_auth_is_down_cost_one_fetch_per_interval(
    flaky: tuple[FlakyJwks, TokenVerifier], token_issuer: TokenIssuer
) -> None:
    jwks, verifier = flaky
    assert await _verified_status(verifier, token_issuer.token()) == 200
    assert jwks.fetches == 1
    jwks.healthy = False
    await asyncio.sleep(TEST_REFRESH_INTERVAL + 0.1)  # an unknown kid may now ask auth again
    forged = [_forged_kid(token_issuer, f"forged-{i}") for i in range(20)]
    statuses = await asyncio.gather(*(_verified_status(verifier, t) for t in forged))
    assert statuses == [401] * 20
    assert jwks.fetches == 2, "only the first forged kid reaches auth; the failure counts too"
    # Known kids keep verifying from the keys already cached, without asking auth either.
    assert await _verified_status(verifier, token_issuer.token()) == 200
    assert jwks.fetches == 2
    await asyncio.sleep(TEST_REFRESH_INTERVAL + 0.1)
    assert await _verified_status(verifier, forged[0]) == 401
    assert jwks.fetches == 3, "the next interval allows one more attempt"


async def test_without_keys_a_down_auth_is_asked_once_per_interval(
    flaky: tuple[FlakyJwks, TokenVerifier], token_issuer: TokenIssuer
) -> None:
    jwks, verifier = flaky
    jwks.healthy = False
    statuses = [await _verified_status(verifier, token_issuer.token()) for _ in range(5)]
    assert statuses == [503] * 5
    with pytest.raises(Problem) as refused:
        await verifier.verify(token_issuer.token())
    # The app comes back when the next fetch may be tried, as after any other 503.
    assert refused.value.headers == {"Retry-After": str(math.ceil(TEST_REFRESH_INTERVAL))}
    assert jwks.fetches == 1
    jwks.healthy = True
    await asyncio.sleep(TEST_REFRESH_INTERVAL + 0.1)
    assert await _verified_status(verifier, token_issuer.token()) == 200
    assert jwks.fetches == 2
