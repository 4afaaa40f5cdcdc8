"""Idempotency-Key handling for creating analyses, enforced by the database per (user, key).

Same key and same request → the analysis the first request created; same key and a different
request → 422. The unique constraint on (owner_id, idempotency_key) settles races: any number of
concurrent requests with one key create exactly one analysis.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from ecosort_common.errors import Problem
from ecosort_waste import crud
from ecosort_waste.models import Analysis

MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class StoredImage:
    key: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Outcome:
    analysis_id: uuid.UUID
    status: str
    created: bool


def request_hash(kind: str, content: bytes) -> str:
    """What "the same body" means: the image bytes (or upload id), not multipart framing."""
    digest = hashlib.sha256(kind.encode() + b"\0")
    digest.update(content)
    return digest.hexdigest()


def validate_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    key = raw.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Problem(
            400,
            f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters.",
            title="Invalid Idempotency-Key",
        )
    return key


async def replay(
    session: AsyncSession, owner_id: uuid.UUID, key: str | None, hashed: str
) -> Analysis | None:
    """The analysis an earlier request with this key created, if any (422 if it differs)."""
    if key is None:
        return None
    existing = await crud.find_by_idempotency_key(session, owner_id, key)
    if existing is not None and existing.request_hash != hashed:
        raise Problem(
            422,
            "This Idempotency-Key was already used with a different request body.",
            title="Idempotency-Key reused",
            type_="urn:ecosort:problem:idempotency-key-reused",
        )
    return existing


async def create_or_replay(
    session: AsyncSession,
    *,
    owner_id: uuid.UUID,
    key: str | None,
    hashed: str,
    store_image: Callable[[], Awaitable[StoredImage]],
) -> Outcome:
    # Cheap check first, so a retried request does not sanitise and store its image again.
    existing = await replay(session, owner_id, key, hashed)
    if existing is not None:
        return Outcome(existing.id, existing.status, created=False)
    image = await store_image()
    new_id = await crud.insert_analysis(
        session,
        owner_id=owner_id,
        image_key=image.key,
        image_sha256=image.sha256,
        idempotency_key=key,
        request_hash=hashed if key is not None else None,
    )
    await session.commit()
    if new_id is None:
        # A concurrent request with the same key won the insert; answer with its analysis.
        winner = await replay(session, owner_id, key, hashed)
        assert winner is not None, "a conflicting insert implies a committed row"
        return Outcome(winner.id, winner.status, created=False)
    return Outcome(new_id, "queued", created=True)  # as inserted: no need to read it back
