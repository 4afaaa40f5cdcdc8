"""Server-side state of a web sign-in between /authorize and /callback: the `state` value keys a
Redis entry holding the PKCE verifier, nonce and redirect_uri; it expires quickly and is taken
with GETDEL, so a state can be used once only, even by two callbacks racing.

The entry is found only with the browser's key too: a random value /authorize hands the browser
in an HttpOnly cookie (one per state, so sign-ins in two tabs do not clash). A (code, state) pair
opened in another browser (login CSRF, or a leaked callback URL replayed) finds nothing and
spends nothing; PKCE cannot tell browsers apart, its verifier never leaves our server."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from redis.asyncio import Redis

KEY = "auth:oauth-state:{digest}"
COOKIE_PREFIX = "ecosort_signin_"


@dataclass(frozen=True)
class PendingSignIn:
    provider: str
    code_verifier: str
    redirect_uri: str
    nonce: str
    device: str


def cookie_name(state: str) -> str:
    """The cookie holding the browser's key for `state`."""
    return COOKIE_PREFIX + hashlib.sha256(state.encode()).hexdigest()[:16]


def _key(state: str, browser_key: str) -> str:
    digest = hashlib.sha256(f"{state}\x00{browser_key}".encode()).hexdigest()
    return KEY.format(digest=digest)


async def save(
    redis: Redis, state: str, browser_key: str, pending: PendingSignIn, ttl_seconds: int
) -> None:
    await redis.set(_key(state, browser_key), json.dumps(asdict(pending)), ex=ttl_seconds)


async def take(redis: Redis, state: str, browser_key: str | None) -> PendingSignIn | None:
    if not browser_key:
        return None
    raw = await redis.getdel(_key(state, browser_key))
    if raw is None:
        return None
    return PendingSignIn(**json.loads(raw))
