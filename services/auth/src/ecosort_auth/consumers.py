"""Events auth reacts to."""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from ecosort_auth.sessions import delete_user
from ecosort_common.events import Event
from ecosort_common.revocation import RevocationWatcher

log = structlog.get_logger("ecosort.auth.consumers")


class UserDeletedHandler:
    """`user.deleted` (from users): forget the person's identities and sessions, and make their
    access tokens stop working now. The app's revocations are attached at start-up, once it has
    them."""

    def __init__(self, access_token_lifetime_seconds: int) -> None:
        self.access_token_lifetime_seconds = access_token_lifetime_seconds
        self.revocations: RevocationWatcher | None = None

    async def __call__(self, session: AsyncSession, event: Event) -> None:
        user_id = uuid.UUID(str(event.payload["user_id"]))
        live_sessions = await delete_user(session, user_id)
        # Set before the commit: if the commit fails the event is redelivered, and marking
        # sessions revoked twice is harmless.
        if self.revocations is not None and live_sessions:
            await self.revocations.revoke(
                live_sessions,
                ttl_seconds=self.access_token_lifetime_seconds,
            )
        log.info("user_deleted", user_id=str(user_id), sessions=len(live_sessions))
