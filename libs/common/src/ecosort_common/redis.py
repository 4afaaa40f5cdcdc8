"""The service's Redis client (redis-py asyncio)."""

from __future__ import annotations

from fastapi import Request
from redis.asyncio import Redis


def create_redis(url: str, *, socket_timeout: float) -> Redis:
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
