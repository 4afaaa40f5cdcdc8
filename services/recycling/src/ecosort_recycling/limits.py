"""Redis-backed limits on feedback: a per-user request rate and a daily model-token budget."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from redis.asyncio import Redis

from ecosort_common.errors import Problem

RATE_KEY = "recycling:feedback-rate:{user}:{minute}"
BUDGET_KEY = "recycling:llm-tokens:{day}"


async def enforce_rate_limit(redis: Redis, user_id: uuid.UUID, per_minute: int) -> None:
    """Fixed one-minute windows: cheap (one INCR) and good enough against a runaway client."""
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
            f"At most {per_minute} feedback requests a minute; try again in {retry_after} s.",
            title="Too many requests",
            headers={"Retry-After": str(retry_after)},
        )


def _budget_key() -> str:
    return BUDGET_KEY.format(day=datetime.now(UTC).strftime("%Y%m%d"))


async def budget_left(redis: Redis, daily_budget: int) -> bool:
    spent = await redis.get(_budget_key())
    return int(spent or 0) < daily_budget


async def spend_tokens(redis: Redis, tokens: int) -> None:
    if tokens <= 0:
        return
    key = _budget_key()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incrby(key, tokens)
        pipe.expire(key, 2 * 86_400)
        await pipe.execute()
