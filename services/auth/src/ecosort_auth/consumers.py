"""Events auth reacts to."""

from __future__ import annotations

import uuid

import structlog
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from ecosort_auth.sessions import delete_user
from ecosort_common.events import Event
from ecosort_common.revocation import revoke_sessions

log = structlog.get_logger("ecosort.auth.consumers")


class UserDeletedHandler:
    """`user.deleted` (from users): forget the person's identities and sessions, and make their
    access tokens stop working now. Redis is attached at start-up, once the app has a client."""

    def __init__(self, access_token_lifetime_seconds: int) -> None:
        self.access_token_lifetime_seconds = access_token_lifetime_seconds
        self.redis: Redis | None = None

    async def __call__(self, session: AsyncSession, event: Event) -> None:
        user_id = uuid.UUID(str(event.payload["user_id"]))
        live_sessions = await delete_user(session, user_id)
        # Set before the commit: if the commit fails the event is redelivered, and marking
        # sessions revoked twice is harmless.
        if self.redis is not None and live_sessions:
            await revoke_sessions(
                self.redis,
                live_sessions,
                ttl_seconds=self.access_token_lifetime_seconds,
            )
        log.info("user_deleted", user_id=str(user_id), sessions=len(live_sessions))
