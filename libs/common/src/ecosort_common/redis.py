"""The service's Redis client (redis-py asyncio)."""

from __future__ import annotations

from fastapi import Request
from redis.asyncio import Redis


def create_redis(url: str, *, socket_timeout: float | None = None) -> Redis:
    # No socket_timeout for requests: with one, redis-py wraps every send in asyncio.wait_for,
    # which on Python 3.11 costs ~35 µs of CPU per command (a task per send) and can drop a
    # cancellation. A Redis that hangs is bounded per request by the request deadline
    # (ecosort_common.deadline) instead. No deadline bounds the outbox relay and the event
    # consumers: they have a client of their own, with one.
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=socket_timeout,
        health_check_interval=30,
    )


def get_redis(request: Request) -> Redis:
    redis: Redis = request.app.state.redis
    return redis
