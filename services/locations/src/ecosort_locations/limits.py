"""Per-user limit on geocoding lookups that reach Kakao Local, whose quota is per day and shared by
every user. The same fixed-window counter as recycling's feedback limit (ecosort_recycling.limits):
services do not import one another, and ecosort_common has no rate limiter yet."""

from __future__ import annotations

import time
import uuid

from redis.asyncio import Redis

from ecosort_common.errors import Problem

RATE_KEY = "locations:geocode-rate:{user}:{minute}"


async def enforce_geocode_rate_limit(redis: Redis, user_id: uuid.UUID, per_minute: int) -> None:
    """Fixed one-minute windows: one INCR, shared by every replica."""
    now = time.time()
    minute = int(now // 60)
    key = RATE_KEY.format(user=user_id, minute=minute)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, 120)
        count, _ = await pipe.execute()
    if int(count) > per_minute:
        retry_after = max(1, 60 - int(now % 60))
        raise Problem(
            429,
            f"At most {per_minute} address lookups a minute; try again in {retry_after} s.",
            title="Too many requests",
            headers={"Retry-After": str(retry_after)},
        )
