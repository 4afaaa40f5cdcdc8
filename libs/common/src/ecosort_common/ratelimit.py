"""Fixed-window rate limits in Redis, shared by every replica: one counter per (scope, key,
window), one INCR per request. Up to twice the limit can pass across a window boundary; these
limits stop runaway clients and guessing, they do not shape traffic."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from ecosort_common.errors import Problem


class RateLimiter:
    """Counters under `{namespace}:ratelimit:{scope}:{key}:{window index}`, so each service's
    keys stay in its own part of the shared Redis."""

    def __init__(self, redis: Redis, namespace: str, *, window_seconds: int) -> None:
        self.redis = redis
        self.prefix = f"{namespace}:ratelimit"
        self.window = window_seconds

    async def hit(self, scope: str, key: str, limit: int) -> None:
        """Count one request by `key` in `scope`; past `limit` in this window, 429."""
        now = time.time()
        counter = f"{self.prefix}:{scope}:{key}:{int(now // self.window)}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(counter)
            # Only the first hit sets the expiry, so a busy counter still goes with its window.
            pipe.expire(counter, self.window + 1, nx=True)
            count, _ = await pipe.execute()
        if int(count) > limit:
            # Rounded up (1..window): a client that waits this long lands in the next window.
            retry_after = self.window - int(now % self.window)
            raise Problem(
                429,
                f"Too many {scope} requests (at most {limit} in {self.window} s); "
                f"try again in {retry_after} s.",
                title="Too many requests",
                headers={"Retry-After": str(retry_after)},
            )
