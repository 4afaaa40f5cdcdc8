"""The daily model-token budget, in Redis so every replica spends from the same one. (The
per-user request rate is ecosort_common.ratelimit, in the feedback route.)

A call reserves the most it can cost before it is made, in one INCRBY, so that concurrent calls
cannot all pass a "still under budget" check and then overspend together; the reservation is
settled to what the server reports once that is known."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis

BUDGET_KEY = "recycling:llm-tokens:{day}"


@dataclass(frozen=True)
class Reservation:
    # The day's key at reservation time: a call that ends after midnight settles that day.
    key: str
    tokens: int


@dataclass
class Call:
    """One model call, as far as the budget cares: whether any of the request left for the
    server. Until then a failed or cancelled call cost nothing; after, it may have cost it all."""

    sent: bool = False


def _budget_key() -> str:
    return BUDGET_KEY.format(day=datetime.now(UTC).strftime("%Y%m%d"))


async def reserve_tokens(redis: Redis, daily_budget: int, tokens: int) -> Reservation | None:
    """Reserve `tokens` of today's budget, or None (nothing reserved) when they do not fit."""
    key = _budget_key()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incrby(key, tokens)
        pipe.expire(key, 2 * 86_400)
        spent, _ = await pipe.execute()
    if int(spent) > daily_budget:
        # While this is handed back, a concurrent call may see the total over budget and be
        # refused too: a refusal too many, never a token too many.
        await redis.decrby(key, tokens)
        return None
    return Reservation(key, tokens)


async def settle_tokens(redis: Redis, reservation: Reservation, used: int | None) -> None:
    """Correct the reservation to what the call cost; `None` (unknown: a timeout, a reply
    without usage) keeps all of it spent, since the server may well have spent it."""
    if used is None or used == reservation.tokens:
        return
    await redis.incrby(reservation.key, used - reservation.tokens)
