"""The daily model-token budget, in Redis so every replica spends from the same one, and each
user's share of it, so that one person (or a stolen token) cannot spend the day's budget for
everyone within the request rate limit (ecosort_common.ratelimit, in the feedback route).

A call reserves the most it can cost before it is made, from both counters in one transaction
(MULTI: INCRBY each), so that concurrent calls cannot all pass a "still under budget" check and
then overspend either together; the reservation is settled to what the server reports once
that is known. Not a Lua script that checks before it adds: the recycling Redis user may not
run scripts (tools/devstack redis_acl.py)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from redis.asyncio import Redis

BUDGET_KEY = "recycling:llm-tokens:{day}"
SHARE_KEY = "recycling:llm-tokens:{day}:user:{user_id}"
# Past the day, so a settlement just after midnight still finds its day's counters.
KEY_TTL_SECONDS = 2 * 86_400

log = structlog.get_logger("ecosort.recycling.limits")


@dataclass(frozen=True)
class Reservation:
    # The day's keys at reservation time, the budget's and the user's share's: a call that
    # ends after midnight settles that day.
    keys: tuple[str, str]
    tokens: int


@dataclass
class Call:
    """One model call, as far as the budget cares: whether any of the request left for the
    server. Until then a failed or cancelled call cost nothing; after, it may have cost it all."""

    sent: bool = False


async def reserve_tokens(
    redis: Redis, user_id: uuid.UUID, tokens: int, *, daily_budget: int, user_share: int
) -> Reservation | None:
    """Reserve `tokens` of today's budget and of the user's share of it, or None (nothing
    reserved) when they do not fit in either."""
    day = datetime.now(UTC).strftime("%Y%m%d")
    keys = (BUDGET_KEY.format(day=day), SHARE_KEY.format(day=day, user_id=user_id))
    async with redis.pipeline(transaction=True) as pipe:
        for key in keys:
            pipe.incrby(key, tokens)
            pipe.expire(key, KEY_TTL_SECONDS)
        spent, _, spent_by_user, _ = await pipe.execute()
    over = [
        limit
        for limit, total, most in (
            ("day", spent, daily_budget),
            ("user_share", spent_by_user, user_share),
        )
        if int(total) > most
    ]
    if over:
        # While this is handed back, a concurrent call may see a total over its limit and be
        # refused too: a refusal too many, never a token too many. Shielded: a client gone
        # meanwhile must not leave the refused reservation spent.
        await asyncio.shield(_add(redis, keys, -tokens))
        # Which limit: one person at their share, day after day, may be a stolen token.
        log.warning("llm_tokens_refused", over=over, user_id=str(user_id), tokens=tokens)
        return None
    return Reservation(keys, tokens)


async def settle_tokens(redis: Redis, reservation: Reservation, used: int | None) -> None:
    """Correct the reservation to what the call cost; `None` (unknown: a timeout, a reply
    without usage) keeps all of it spent, since the server may well have spent it."""
    if used is None or used == reservation.tokens:
        return
    await _add(redis, reservation.keys, used - reservation.tokens)


async def _add(redis: Redis, keys: tuple[str, str], tokens: int) -> None:
    # One transaction: one round trip, and no one sees one counter corrected without the other.
    # The expiry again: a counter lost meanwhile (Redis restarted) is made anew by INCRBY, and
    # without one it would stay for ever, one per user and day.
    async with redis.pipeline(transaction=True) as pipe:
        for key in keys:
            pipe.incrby(key, tokens)
            pipe.expire(key, KEY_TTL_SECONDS)
        await pipe.execute()
