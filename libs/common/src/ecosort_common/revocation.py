"""Revoked sessions: marked by auth, known to every process without a Redis call per request.

Auth marks a session revoked with a key `auth:revoked-sid:<sid>` whose TTL is the access-token
lifetime, and announces it on the channel `auth:revoked-sids` in the same transaction. Each process
subscribes once, loads the keys that already exist, and keeps its own set current from the
announcements, so checking a token's session is a dictionary lookup.

The local set is trusted only while the process's subscription (ecosort_common.subscription)
is known to be alive. Otherwise the verifier asks Redis for the key, one EXISTS per request: a
lost or half-open subscription can slow requests down, never let a revoked token through.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Iterable
from typing import cast

import structlog
from redis.asyncio import Redis

from ecosort_common.subscription import Subscription

REVOKED_SESSION_KEY = "auth:revoked-sid:{sid}"
REVOCATION_CHANNEL = "auth:revoked-sids"
# A key without a TTL (set by hand) is remembered this long.
_NO_TTL_SECONDS = 3600
log = structlog.get_logger("ecosort.revocation")


async def revoke_sessions(
    redis: Redis, session_ids: Iterable[uuid.UUID | str], *, ttl_seconds: int
) -> None:
    """Mark sessions revoked for `ttl_seconds` (the longest life of a token they issued)."""
    async with redis.pipeline(transaction=True) as pipe:
        for sid in session_ids:
            pipe.set(REVOKED_SESSION_KEY.format(sid=sid), "1", ex=ttl_seconds)
            pipe.publish(REVOCATION_CHANNEL, json.dumps({"sid": str(sid), "ttl": ttl_seconds}))
        await pipe.execute()


class RevocationWatcher:
    def __init__(self, redis: Redis, subscription: Subscription) -> None:
        self._redis = redis
        self._subscription = subscription
        self._expires_at: dict[str, float] = {}  # sid -> time.monotonic() when the key expires
        self._swept_at = 0.0
        subscription.add(REVOCATION_CHANNEL, self._announced, on_subscribed=self._load_existing)

    async def is_revoked(self, sid: str) -> bool:
        if not self._subscription.live:
            key = REVOKED_SESSION_KEY.format(sid=sid)
            return bool(await cast(Awaitable[int], self._redis.exists(key)))
        expires_at = self._expires_at.get(sid)
        return expires_at is not None and expires_at > time.monotonic()

    async def _load_existing(self) -> None:
        pattern = REVOKED_SESSION_KEY.format(sid="*")
        keys = [key async for key in self._redis.scan_iter(match=pattern, count=1000)]
        if not keys:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.pttl(key)
            ttls = await pipe.execute()
        prefix = pattern.removesuffix("*")
        for key, ttl_ms in zip(keys, ttls, strict=True):
            if ttl_ms == -1:
                self._remember(key.removeprefix(prefix), _NO_TTL_SECONDS)
            elif ttl_ms > 0:
                self._remember(key.removeprefix(prefix), ttl_ms / 1000)

    def _announced(self, data: str) -> None:
        try:
            payload = json.loads(data)
            self._remember(str(payload["sid"]), float(payload["ttl"]))
        except (ValueError, KeyError, TypeError):
            log.warning("revocation_message_malformed")

    def _remember(self, sid: str, ttl_seconds: float) -> None:
        now = time.monotonic()
        self._expires_at[sid] = now + ttl_seconds
        if now - self._swept_at > 60:
            self._swept_at = now
            self._expires_at = {s: at for s, at in self._expires_at.items() if at > now}
