"""Revoked sessions: marked by auth, known to every process without a Redis call per request.

Auth marks a session revoked with a key `auth:revoked-sid:<sid>` whose TTL is the access-token
lifetime, and announces it on the channel `auth:revoked-sids` in the same transaction. Each process
subscribes once, loads the keys that already exist, and keeps its own set current from the
announcements, so checking a token's session is a dictionary lookup.

The local set is trusted only while the subscription is known to be alive (a message or a pong
heard within a few ping intervals). Otherwise the verifier asks Redis for the key, as it did per
request before: a lost or half-open subscription can slow requests down, never let a revoked
token through.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Awaitable, Iterable
from contextlib import suppress
from typing import Any, cast

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

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
    def __init__(
        self, redis: Redis, *, ping_seconds: float = 5.0, reconnect_seconds: float = 1.0
    ) -> None:
        self._redis = redis
        self._ping_seconds = ping_seconds
        self._reconnect_seconds = reconnect_seconds
        self._expires_at: dict[str, float] = {}  # sid -> time.monotonic() when the key expires
        self._heard_at = -math.inf
        self._swept_at = 0.0
        self.subscribed = asyncio.Event()

    @property
    def live(self) -> bool:
        return time.monotonic() - self._heard_at < 3 * self._ping_seconds

    async def is_revoked(self, sid: str) -> bool:
        if not self.live:
            key = REVOKED_SESSION_KEY.format(sid=sid)
            return bool(await cast(Awaitable[int], self._redis.exists(key)))
        expires_at = self._expires_at.get(sid)
        return expires_at is not None and expires_at > time.monotonic()

    async def run(self) -> None:
        """Follow the announcements for the life of the process."""
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("revocation_subscription_lost", error=str(exc))
            self._heard_at = -math.inf
            self.subscribed.clear()
            await asyncio.sleep(self._reconnect_seconds)

    async def _follow(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(REVOCATION_CHANNEL)
            await self._confirmed(pubsub)
            # Subscribed first, loaded second: a revocation made in between is in one or the other.
            await self._load_existing()
            self._heard_at = next_ping = time.monotonic()
            self.subscribed.set()
            while True:
                message = await pubsub.get_message(timeout=self._ping_seconds)
                if message is not None:
                    self._heard(message)
                if time.monotonic() >= next_ping:
                    await pubsub.ping()
                    next_ping = time.monotonic() + self._ping_seconds
        finally:
            with suppress(RedisError, OSError):
                await pubsub.aclose()

    async def _confirmed(self, pubsub: PubSub) -> None:
        async with asyncio.timeout(10):
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] == "subscribe":
                    return

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

    def _heard(self, message: dict[str, Any]) -> None:
        self._heard_at = time.monotonic()
        if message["type"] != "message":
            return
        try:
            payload = json.loads(message["data"])
            self._remember(str(payload["sid"]), float(payload["ttl"]))
        except (ValueError, KeyError, TypeError):
            log.warning("revocation_message_malformed")

    def _remember(self, sid: str, ttl_seconds: float) -> None:
        now = time.monotonic()
        self._expires_at[sid] = now + ttl_seconds
        if now - self._swept_at > 60:
            self._swept_at = now
            self._expires_at = {s: at for s, at in self._expires_at.items() if at > now}
