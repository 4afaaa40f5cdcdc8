"""Token signing keys: generated, encrypted at rest, rotated, published as a JWKS.

Why the database: every replica and the `rotate-keys` command see the same keys at once, with no
shared volume or redeploy, and the rotation is one transaction. The private halves are stored as
encrypted PKCS#8 (AES-256, key derived from AUTH_KEY_ENCRYPTION_KEY, which lives in a Kubernetes
Secret), so a database dump alone does not leak a key that can sign tokens.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import ECKey
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from ecosort_auth.models import SigningKey

ALGORITHM = "ES256"
CURVE = "P-256"
# `next` is published before it signs anything: verifiers that cached the JWKS since the last
# rotation already hold the key the next rotation switches to, so no token is refused meanwhile.
PUBLISHED_STATUSES = ("current", "previous", "next")
# Serialises key creation and rotation across replicas (any constant the service owns).
_KEYS_LOCK_ID = 0x45434F4B  # "ECOK"


@dataclass(frozen=True)
class ActiveKey:
    kid: str
    key: ECKey


class KeyRing:
    """Reads the current key from the database and keeps decrypted keys in memory by kid
    (decrypting PKCS#8 is deliberately slow, so it happens once per key per process)."""

    def __init__(self, key_encryption_key: str) -> None:
        self._kek = key_encryption_key
        self._decrypted: dict[str, ECKey] = {}

    def _decrypt(self, row: SigningKey) -> ECKey:
        key = self._decrypted.get(row.kid)
        if key is None:
            key = ECKey.import_key(
                row.encrypted_private_key,
                parameters={"kid": row.kid, "alg": ALGORITHM, "use": "sig"},
                password=self._kek,
            )
            self._decrypted[row.kid] = key
        return key

    async def current(self, session: AsyncSession) -> ActiveKey:
        row = (
            await session.execute(select(SigningKey).where(SigningKey.status == "current"))
        ).scalar_one_or_none()
        if row is None:
            row = await ensure_current_key(session, self._kek)
        return ActiveKey(kid=row.kid, key=self._decrypt(row))


def _new_key_row(kek: str, status: str) -> SigningKey:
    kid = secrets.token_urlsafe(12)
    key = ECKey.generate_key(CURVE, parameters={"kid": kid}, private=True)
    public = {**key.as_dict(private=False), "kid": kid, "alg": ALGORITHM, "use": "sig"}
    return SigningKey(
        kid=kid,
        algorithm=ALGORITHM,
        status=status,
        encrypted_private_key=key.as_pem(private=True, password=kek).decode("ascii"),
        public_jwk=public,
    )


async def _lock_keys(session: AsyncSession) -> None:
    await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _KEYS_LOCK_ID})


async def ensure_current_key(session: AsyncSession, kek: str) -> SigningKey:
    """Return the current key, creating it and the next one if missing (first start)."""
    await _lock_keys(session)
    rows = {
        row.status: row
        for row in (
            await session.execute(
                select(SigningKey).where(SigningKey.status.in_(("current", "next")))
            )
        ).scalars()
    }
    if "current" not in rows:
        rows["current"] = _new_key_row(kek, "current")
        session.add(rows["current"])
    if "next" not in rows:
        session.add(_new_key_row(kek, "next"))
    await session.flush()
    return rows["current"]


async def rotate_keys(session: AsyncSession, kek: str) -> str:
    """The pre-published next key starts signing; the old current key stays published as
    `previous`, so tokens it signed keep verifying until they expire; the key before that is
    retired; a new next key is published for the rotation after this one."""
    await ensure_current_key(session, kek)  # takes the lock; the first rotation needs a next key
    await session.execute(
        update(SigningKey)
        .where(SigningKey.status == "previous")
        .values(status="retired", retired_at=func.now())
    )
    await session.execute(
        update(SigningKey).where(SigningKey.status == "current").values(status="previous")
    )
    promoted = (
        await session.execute(
            update(SigningKey)
            .where(SigningKey.status == "next")
            .values(status="current")
            .returning(SigningKey.kid)
        )
    ).scalar_one()
    session.add(_new_key_row(kek, "next"))
    await session.flush()
    return str(promoted)


async def published_jwks(session: AsyncSession) -> dict[str, Any]:
    rows = (
        await session.execute(
            select(SigningKey.public_jwk)
            .where(SigningKey.status.in_(PUBLISHED_STATUSES))
            .order_by(SigningKey.created_at.desc())
        )
    ).scalars()
    return {"keys": list(rows)}
