"""The process's one Redis pub/sub connection, shared by everything that listens.

Components register a channel with a handler, and say what to do when the subscription starts
(load what was published before it) and when it is lost (fall back to asking Redis). Every
service listens for revoked sessions (ecosort_common.revocation); waste also listens for
analysis progress. However many channels and clients, a process holds one subscription.

Liveness is proven, not assumed: the connection is pinged every few seconds, and `live` turns
false when neither a message nor a pong was heard for three intervals, so a half-open TCP
connection cannot pass for a working one.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

log = structlog.get_logger("ecosort.subscription")
MessageHandler = Callable[[str], None]


@dataclass(frozen=True)
class _Channel:
    on_message: MessageHandler
    on_subscribed: Callable[[], Awaitable[None]] | None
    on_lost: Callable[[], None] | None


class Subscription:
    def __init__(
        self, redis: Redis, *, ping_seconds: float = 5.0, reconnect_seconds: float = 1.0
    ) -> None:
        self._redis = redis
        self._ping_seconds = ping_seconds
        self._reconnect_seconds = reconnect_seconds
        self._channels: dict[str, _Channel] = {}
        self._heard_at = -math.inf
        self.subscribed = asyncio.Event()

    def add(
        self,
        channel: str,
        on_message: MessageHandler,
        *,
        on_subscribed: Callable[[], Awaitable[None]] | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        """Register a channel; before `run` starts (start-up hooks run before it)."""
        self._channels[channel] = _Channel(on_message, on_subscribed, on_lost)

    @property
    def live(self) -> bool:
        return time.monotonic() - self._heard_at < 3 * self._ping_seconds

    async def run(self) -> None:
        """Keep the subscription alive for the life of the process."""
        if not self._channels:
            return
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("subscription_lost", error=str(exc) or type(exc).__name__)
            self._heard_at = -math.inf
            self.subscribed.clear()
            for channel in self._channels.values():
                if channel.on_lost is not None:
                    channel.on_lost()
            await asyncio.sleep(self._reconnect_seconds)

    async def _follow(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(*self._channels)
            await self._confirmed(pubsub)
            # Subscribed first, caught up second: what is published in between is in one or
            # the other, never in neither.
            for channel in self._channels.values():
                if channel.on_subscribed is not None:
                    await channel.on_subscribed()
            self._heard_at = next_ping = time.monotonic()
            self.subscribed.set()
            while True:
                message = await pubsub.get_message(timeout=self._ping_seconds)
                if message is not None:
                    self._heard_at = time.monotonic()
                    if message["type"] == "message":
                        self._dispatch(message["channel"], message["data"])
                if time.monotonic() >= next_ping:
                    await pubsub.ping()
                    next_ping = time.monotonic() + self._ping_seconds
                if not self.live:
                    raise TimeoutError("no pong from Redis")
        finally:
            with suppress(RedisError, OSError):
                await pubsub.aclose()

    def _dispatch(self, channel: str, data: str) -> None:
        try:
            self._channels[channel].on_message(data)
        except Exception:  # one bad message must not take the subscription down
            log.exception("subscription_message_failed", channel=channel)

    async def _confirmed(self, pubsub: PubSub) -> None:
        waiting = set(self._channels)
        async with asyncio.timeout(10):
            while waiting:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] == "subscribe":
                    waiting.discard(message["channel"])
