"""Deleting sessions that ended long ago, with their refresh tokens.

Every sign-in adds a session and every refresh a refresh token, and only an account's deletion
deleted them. A session that ended (expired, or revoked: logout, sign-out of a device, reuse)
more than AUTH_ENDED_SESSION_RETENTION_SECONDS ago goes now, its refresh tokens with it. Until
then its tokens keep their answers (`expired`, `revoked`); afterwards they are `unknown`: a 401
problem+json like the others, which a client answers by signing in again.

The rotated tokens of a live session all stay. A thief who spends a stolen token first holds a
live successor until the rightful holder presents its own copy, now spent, which revokes the
whole family (reuse detection, sessions.py); that may be weeks later, when the app is next
opened. Pruned, that copy would be refused as `unknown`, and the thief's family would live to
its end. They are bounded by the session's fixed lifetime (AUTH_REFRESH_TOKEN_TTL_SECONDS, never
extended) and go with it.

Every replica runs the loop, as every replica prunes its outbox and its inbox: deleting is
idempotent, and replicas that meet in a round only wait for each other's batch.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ecosort_auth.models import AuthSession
from ecosort_common import aio
from ecosort_common.outbox import PRUNE_BATCH, delete_by_key, delete_in_batches

# A retention of weeks need not be kept to the minute; rare rounds keep the scans rare too.
PRUNE_EVERY_SECONDS = 600.0
log = structlog.get_logger("ecosort.auth.pruning")


async def prune_ended_sessions(
    sessionmaker: async_sessionmaker[AsyncSession], retention: timedelta
) -> int:
    """Delete the sessions that ended more than `retention` ago, with their refresh tokens, a
    batch per transaction, for at most PRUNE_SECONDS; how many sessions."""
    cutoff = datetime.now(UTC) - retention
    # No index on when a session ended: the scan stops at a batch's worth, and the table stays
    # small once pruned. Of 300k sessions (1.06M tokens), the 254k ended went in one round of
    # 3.9 s, 10-18 ms a batch; a round's last batch reads all 46k left in 8-70 ms. An index
    # would cost every sign-in and sign-out a write.
    ended = (
        select(AuthSession.id)
        .where(or_(AuthSession.expires_at < cutoff, AuthSession.revoked_at < cutoff))
        .limit(PRUNE_BATCH)
    )
    # The refresh tokens go by the foreign key's ON DELETE CASCADE, through
    # ix_refresh_tokens_session_id: 1,000 sessions of 3.5 tokens in 10 ms, one session of
    # 200,000 tokens in 80 ms.
    return await delete_in_batches(sessionmaker, delete_by_key(AuthSession, AuthSession.id, ended))


async def run_session_pruning(
    sessionmaker: async_sessionmaker[AsyncSession], retention: timedelta
) -> None:
    """Prune every PRUNE_EVERY_SECONDS, the first round at start; a failed round is logged and
    the next one tries again."""
    while True:
        try:
            async with asyncio.timeout(aio.BACKGROUND_ROUND_SECONDS):
                pruned = await prune_ended_sessions(sessionmaker, retention)
            if pruned:
                log.info("ended_sessions_pruned", sessions=pruned)
        except Exception as exc:  # the database is down or gone silent: never crash the service
            log.warning("session_pruning_failed", error=type(exc).__name__)
        await asyncio.sleep(PRUNE_EVERY_SECONDS)
