"""The daily model-token budget, in Redis so every replica spends from the same one. (The
per-user request rate is ecosort_common.ratelimit, in the feedback route.)"""

from __future__ import annotations

from datetime import UTC, datetime

from redis.asyncio import Redis

BUDGET_KEY = "recycling:llm-tokens:{day}"


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
