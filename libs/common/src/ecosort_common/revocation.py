"""Revoked sessions: marked by auth, known to every process without a Redis call per request.

Auth adds a revoked session to the sorted set `auth:revoked-sessions`, scored with the Unix time
its revocation ends (when the last access token it issued expires), and announces it on the
channel `auth:revoked-sids` in the same transaction. Each process subscribes once, reads the
revocations still in force, and keeps its own set current from the announcements, so checking a
token's session is a dictionary lookup.

One sorted set rather than a key per session: reading what is in force after a (re)subscription
is one ZRANGEBYSCORE, not a SCAN of the whole shared keyspace by every process at once (after a
Redis failover, all of them resubscribe together). Each revocation drops the ended ones.

The local set is trusted only while the process's subscription (ecosort_common.subscription)
is known to be alive. Otherwise the verifier asks Redis, one ZSCORE per request: a lost or
half-open subscription can slow requests down, never let a revoked token through.
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

REVOKED_SESSIONS = "auth:revoked-sessions"  # session id -> Unix time its revocation ends
REVOCATION_CHANNEL = "auth:revoked-sids"
log = structlog.get_logger("ecosort.revocation")


async def revoke_sessions(
    redis: Redis, session_ids: Iterable[uuid.UUID | str], *, ttl_seconds: int
) -> None:
    """Mark sessions revoked for `ttl_seconds` (the longest life of a token they issued)."""
    sids = [str(sid) for sid in session_ids]
    if not sids:
        return
    now = time.time()
    async with redis.pipeline(transaction=True) as pipe:
        # GT: a session revoked twice stays revoked until the later end (Redis >= 6.2).
        pipe.zadd(REVOKED_SESSIONS, dict.fromkeys(sids, now + ttl_seconds), gt=True)
        pipe.zremrangebyscore(REVOKED_SESSIONS, "-inf", now)
        for sid in sids:
            pipe.publish(REVOCATION_CHANNEL, json.dumps({"sid": sid, "ttl": ttl_seconds}))
        await pipe.execute()


class RevocationWatcher:
    def __init__(self, redis: Redis, subscription: Subscription) -> None:
        self._redis = redis
        self._subscription = subscription
        self._expires_at: dict[str, float] = {}  # sid -> time.monotonic() when the key expires
        self._swept_at = 0.0
        subscription.add(REVOCATION_CHANNEL, self._announced, on_subscribed=self._load_existing)

    async def revoke(self, session_ids: Iterable[uuid.UUID | str], *, ttl_seconds: int) -> None:
        """`revoke_sessions`, and this process knows at once: the next request it serves must not
        pass on a token whose revocation has not yet come back to it over the subscription."""
        sids = [str(sid) for sid in session_ids]
        await revoke_sessions(self._redis, sids, ttl_seconds=ttl_seconds)
        for sid in sids:
            self._remember(sid, ttl_seconds)

    async def is_revoked(self, sid: str) -> bool:
        if not self._subscription.live:
            ends_at = await cast(Awaitable[float | None], self._redis.zscore(REVOKED_SESSIONS, sid))
            return ends_at is not None and ends_at > time.time()
        expires_at = self._expires_at.get(sid)
        return expires_at is not None and expires_at > time.monotonic()

    async def _load_existing(self) -> None:
        now = time.time()
        in_force = await cast(
            Awaitable[list[tuple[str, float]]],
            self._redis.zrangebyscore(REVOKED_SESSIONS, f"({now}", "+inf", withscores=True),
        )
        for sid, ends_at in in_force:
            self._remember(sid, ends_at - now)

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
