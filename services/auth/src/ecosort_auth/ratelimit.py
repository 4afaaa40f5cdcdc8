"""Fixed-window rate limits in Redis, shared by every replica: one counter per (scope, key,
window); the first hit of a window sets its expiry. Over the limit → 429 with Retry-After."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from ecosort_common.errors import Problem

KEY_PREFIX = "auth:ratelimit"


class RateLimiter:
    def __init__(self, redis: Redis, *, window_seconds: int) -> None:
        self.redis = redis
        self.window = window_seconds

    async def hit(self, scope: str, key: str, limit: int) -> None:
        now = time.time()
        window_index = int(now // self.window)
        counter = f"{KEY_PREFIX}:{scope}:{key}:{window_index}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(counter)
            pipe.expire(counter, self.window + 1, nx=True)
            count, _ = await pipe.execute()
        if int(count) > limit:
            retry_after = max(1, int((window_index + 1) * self.window - now) + 1)
            raise Problem(
                429,
                f"Too many {scope} attempts; try again in {retry_after} s.",
                title="Too many requests",
                headers={"Retry-After": str(retry_after)},
            )
