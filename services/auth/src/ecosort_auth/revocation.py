"""Making revoked sessions' access tokens stop working at once.

Access tokens are verified locally by every service (ecosort_common.security), so revoking a
session in auth's database alone would leave its tokens valid until they expire. Every service's
verifier also refuses a token whose `sid` has a key `auth:revoked-sid:<sid>` in Redis; it only
needs to live as long as the longest access token still in circulation.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from redis.asyncio import Redis

from ecosort_common.security import REVOKED_SESSION_KEY


async def mark_sessions_revoked(
    redis: Redis, session_ids: Iterable[uuid.UUID], *, access_token_lifetime_seconds: int
) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for sid in session_ids:
            pipe.set(REVOKED_SESSION_KEY.format(sid=sid), "1", ex=access_token_lifetime_seconds)
        await pipe.execute()
