"""Users, sessions and refresh-token rotation: the data side of signing in."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ecosort_auth.models import AuthSession, Identity, RefreshToken, outbox
from ecosort_auth.tokens import hash_refresh_token, new_refresh_token
from ecosort_common.events import USER_REGISTERED
from ecosort_common.outbox import add_event
from ecosort_common.pagination import paginate

# The columns' lengths (models.Identity): a provider's profile is not ours to refuse over them.
MAX_NICKNAME = 100
MAX_EMAIL = 320


@dataclass(frozen=True)
class ProviderIdentity:
    """Who the provider (or the dev login) says signed in. The profile is kept as far as our
    columns take it: a nickname is cut to MAX_NICKNAME, an email that does not fit is dropped
    (a cut one would be someone else's), and neither may hold NUL, which PostgreSQL refuses;
    otherwise that person's every sign-in would fail."""

    provider: str
    subject: str
    nickname: str | None = None
    email: str | None = None

    def __post_init__(self) -> None:
        nickname = _text(self.nickname)
        email = _text(self.email)
        object.__setattr__(self, "nickname", nickname[:MAX_NICKNAME] if nickname else None)
        object.__setattr__(self, "email", email if email and len(email) <= MAX_EMAIL else None)


def _text(value: object) -> str | None:
    return value.replace("\x00", "") if isinstance(value, str) else None


@dataclass(frozen=True)
class SignedInUser:
    user_id: uuid.UUID
    nickname: str | None
    provider: str
    created: bool


@dataclass(frozen=True)
class NewSession:
    session_id: uuid.UUID
    user_id: uuid.UUID
    refresh_token: str


@dataclass(frozen=True)
class RefreshRefused:
    """Why a refresh token was not accepted; `revoked_session` is set when this attempt revoked
    a family (a spent token came back)."""

    reason: str
    revoked_session: uuid.UUID | None = None


async def sign_in_identity(session: AsyncSession, who: ProviderIdentity) -> SignedInUser:
    """Find or create the user of (provider, subject). Creating one stages `user.registered` in
    the same transaction; ON CONFLICT makes two first sign-ins at once agree on one user."""
    new_user_id = uuid.uuid4()
    inserted = (
        await session.execute(
            insert(Identity)
            .values(
                user_id=new_user_id,
                provider=who.provider,
                subject=who.subject,
                nickname=who.nickname,
                email=who.email,
            )
            .on_conflict_do_nothing(index_elements=["provider", "subject"])
            .returning(Identity.user_id)
        )
    ).scalar_one_or_none()
    if inserted is not None:
        await add_event(
            session,
            outbox,
            USER_REGISTERED,
            {
                "user_id": str(inserted),
                "provider": who.provider,
                "nickname": who.nickname,
                "email": who.email,
            },
        )
        return SignedInUser(inserted, who.nickname, who.provider, created=True)
    identity = (
        await session.execute(
            update(Identity)
            .where(Identity.provider == who.provider, Identity.subject == who.subject)
            .values(last_sign_in_at=func.now())
            .returning(Identity)
        )
    ).scalar_one()
    return SignedInUser(identity.user_id, identity.nickname, who.provider, created=False)


async def start_session(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    provider: str,
    device: str,
    refresh_lifetime_seconds: int,
) -> NewSession:
    expires_at = datetime.now(UTC) + timedelta(seconds=refresh_lifetime_seconds)
    family = AuthSession(
        id=uuid.uuid4(),
        user_id=user_id,
        provider=provider,
        device=device[:200],
        expires_at=expires_at,
    )
    session.add(family)
    await session.flush()
    token = new_refresh_token()
    session.add(
        RefreshToken(
            session_id=family.id, token_hash=hash_refresh_token(token), expires_at=expires_at
        )
    )
    await session.flush()
    return NewSession(family.id, user_id, token)


async def owner_of_refresh_token(session: AsyncSession, token: str) -> uuid.UUID | None:
    """The user a refresh token belongs to (spent or not): the rate limit's subject."""
    return (
        await session.execute(
            select(AuthSession.user_id)
            .join(RefreshToken, RefreshToken.session_id == AuthSession.id)
            .where(RefreshToken.token_hash == hash_refresh_token(token))
        )
    ).scalar_one_or_none()


async def rotate_refresh_token(session: AsyncSession, token: str) -> NewSession | RefreshRefused:
    """Spend `token` and hand out its successor, in the caller's transaction. A refusal is
    returned, not raised, because a reuse's revocation must be committed, not rolled back.

    The conditional UPDATE is the guard: PostgreSQL row-locks the token, so of N concurrent
    callers exactly one sees `spent_at IS NULL`; the others re-check after it commits, find it
    spent, and are treated as reuse (RFC 9700 §4.14.2): the whole family is revoked.
    """
    token_hash = hash_refresh_token(token)
    now = datetime.now(UTC)
    spent = (
        await session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.token_hash == token_hash,
                RefreshToken.spent_at.is_(None),
                RefreshToken.expires_at > now,
                RefreshToken.session_id == AuthSession.id,
                AuthSession.revoked_at.is_(None),
            )
            .values(spent_at=now)
            .returning(RefreshToken.session_id, AuthSession.user_id, AuthSession.expires_at)
        )
    ).first()
    if spent is None:
        return await _refusal(session, token_hash)
    session_id, user_id, family_expires_at = spent
    await session.execute(
        update(AuthSession).where(AuthSession.id == session_id).values(last_used_at=now)
    )
    successor = new_refresh_token()
    session.add(
        RefreshToken(
            session_id=session_id,
            token_hash=hash_refresh_token(successor),
            expires_at=family_expires_at,
        )
    )
    await session.flush()
    return NewSession(session_id, user_id, successor)


async def _refusal(session: AsyncSession, token_hash: str) -> RefreshRefused:
    row = (
        await session.execute(
            select(RefreshToken.session_id, RefreshToken.spent_at, AuthSession.revoked_at)
            .join(AuthSession, AuthSession.id == RefreshToken.session_id)
            .where(RefreshToken.token_hash == token_hash)
        )
    ).first()
    if row is None:
        return RefreshRefused("unknown")
    session_id, spent_at, revoked_at = row
    if revoked_at is not None:
        return RefreshRefused("revoked")
    if spent_at is not None:
        await revoke_session(session, session_id, reason="refresh_token_reuse")
        return RefreshRefused("reused", revoked_session=session_id)
    return RefreshRefused("expired")


async def revoke_session(session: AsyncSession, session_id: uuid.UUID, *, reason: str) -> bool:
    revoked = (
        await session.execute(
            update(AuthSession)
            .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=func.now(), revoked_reason=reason)
            .returning(AuthSession.id)
        )
    ).first()
    return revoked is not None


async def active_sessions(
    session: AsyncSession, user_id: uuid.UUID, *, cursor: str | None, limit: int
) -> list[AuthSession]:
    """A page of the user's live sessions, newest first (limit + 1 rows, see paginate)."""
    stmt = select(AuthSession).where(
        AuthSession.user_id == user_id,
        AuthSession.revoked_at.is_(None),
        AuthSession.expires_at > func.now(),
    )
    stmt = paginate(stmt, AuthSession.created_at, AuthSession.id, cursor=cursor, limit=limit)
    return list((await session.execute(stmt)).scalars())


async def session_of_refresh_token(session: AsyncSession, token: str) -> uuid.UUID | None:
    return (
        await session.execute(
            select(RefreshToken.session_id).where(
                RefreshToken.token_hash == hash_refresh_token(token)
            )
        )
    ).scalar_one_or_none()


async def find_owned_session(
    session: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID
) -> AuthSession | None:
    return (
        await session.execute(
            select(AuthSession).where(
                AuthSession.id == session_id,
                AuthSession.user_id == user_id,
                AuthSession.revoked_at.is_(None),
            )
        )
    ).scalar_one_or_none()


async def delete_user(session: AsyncSession, user_id: uuid.UUID) -> list[uuid.UUID]:
    """Remove a user's identities and sessions (refresh tokens go with them by cascade);
    returns the sessions that were still live, whose access tokens must now be refused."""
    # Identities first: deleting one waits for a sign-in in flight, which holds its row, to
    # commit, so that the session it opened is among those found and deleted below.
    await session.execute(delete(Identity).where(Identity.user_id == user_id))
    live = list(
        (
            await session.execute(
                select(AuthSession.id).where(
                    AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None)
                )
            )
        ).scalars()
    )
    await session.execute(delete(AuthSession).where(AuthSession.user_id == user_id))
    return live
