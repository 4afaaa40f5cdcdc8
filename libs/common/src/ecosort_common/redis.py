"""The service's Redis client (redis-py asyncio)."""

from __future__ import annotations

from fastapi import Request
from redis.asyncio import Redis

# For loops no request deadline bounds (the outbox relay, the event consumers, the waste
# worker's pipeline and reaper): above the consumers' 1 s XREADGROUP BLOCK, and a connection gone
# silent (Redis failed over, a half-open TCP connection) fails, is dropped and retried on a new
# one, rather than holding them for ever.
BACKGROUND_SOCKET_TIMEOUT_SECONDS = 10.0


def create_redis(url: str, *, socket_timeout: float | None = None) -> Redis:
    # No socket_timeout for requests: with one, redis-py wraps every send in asyncio.wait_for,
    # which on Python 3.11 costs ~35 µs of CPU per command (a task per send) and can drop a
    # cancellation. A Redis that hangs is bounded per request by the request deadline
    # (ecosort_common.deadline) instead. Background loops have clients of their own, with
    # BACKGROUND_SOCKET_TIMEOUT_SECONDS.
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=socket_timeout,
        health_check_interval=30,
    )


def create_background_redis(url: str) -> Redis:
    """A client for a loop no request deadline bounds: BACKGROUND_SOCKET_TIMEOUT_SECONDS."""
    return create_redis(url, socket_timeout=BACKGROUND_SOCKET_TIMEOUT_SECONDS)


def get_redis(request: Request) -> Redis:
    redis: Redis = request.app.state.redis
    return redis
