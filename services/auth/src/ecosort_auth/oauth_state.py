"""Server-side state of a web sign-in between /authorize and /callback: the `state` value keys a
Redis entry holding the PKCE verifier, nonce and redirect_uri; it expires quickly and is taken
with GETDEL, so a state can be used once only, even by two callbacks racing."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from redis.asyncio import Redis

KEY = "auth:oauth-state:{state}"


@dataclass(frozen=True)
class PendingSignIn:
    provider: str
    code_verifier: str
    redirect_uri: str
    nonce: str
    device: str


async def save(redis: Redis, state: str, pending: PendingSignIn, ttl_seconds: int) -> None:
    await redis.set(KEY.format(state=state), json.dumps(asdict(pending)), ex=ttl_seconds)


async def take(redis: Redis, state: str) -> PendingSignIn | None:
    raw = await redis.getdel(KEY.format(state=state))
    if raw is None:
        return None
    return PendingSignIn(**json.loads(raw))
