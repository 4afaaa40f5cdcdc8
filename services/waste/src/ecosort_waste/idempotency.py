"""Creating analyses exactly once: per (user, Idempotency-Key), and per direct upload.

Same key and same request → the analysis the first request created; same key and a different
request → 422; an upload that already made an analysis → 409 (unless it is that analysis's own
replay). The database decides: requests with one key take turns under an advisory lock, and
unique constraints on (owner_id, idempotency_key) and on upload_id settle the rest. A request
that loses stores nothing of its own: under the key's lock it learns before storing that it
lost, and a race for an upload is between copies of one photo, which make one object. (A
request that fails after storing leaves an object no row names; the owner's account deletion
takes the whole folder.)
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from ecosort_common.db import hold_account_lock
from ecosort_common.errors import Problem
from ecosort_waste import crud
from ecosort_waste.images import SanitisedImage
from ecosort_waste.storage import Storage, image_key

MAX_KEY_LENGTH = 255
log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class NewAnalysis:
    """What a create request asks for."""

    owner_id: uuid.UUID
    key: str | None
    hashed: str
    upload_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    analysis_id: uuid.UUID
    status: str
    created: bool


class UploadAlreadyUsed(Problem):
    def __init__(self) -> None:
        super().__init__(
            409,
            "This upload_id already made an analysis (an upload makes one): upload the "
            "photo again, with a new form from POST /api/v1/waste/uploads.",
            title="Upload already used",
        )


class AccountDeleted(Problem):
    def __init__(self) -> None:
        super().__init__(410, "This account has been deleted.", title="Account deleted")


def unknown_upload() -> Problem:
    return Problem(
        422,
        "No uploaded object for this upload_id (it goes once an analysis is made from it): "
        "upload it first, with the form from POST /api/v1/waste/uploads.",
        title="Unknown upload",
    )


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


async def create_or_replay(
    session: AsyncSession,
    storage: Storage,
    new: NewAnalysis,
    load: Callable[[], Awaitable[SanitisedImage | None]],
) -> Outcome:
    """The analysis ``new`` asks for, created from the image ``load`` returns (None: the upload
    is gone), or the answer an earlier request already settled."""
    # A look without the lock first, so a retry answered long ago neither waits nor loads its
    # image again. Its transaction ends here: no connection is held while the image is read and
    # sanitised, the slow part.
    settled = await _settled(session, new)
    await session.rollback()
    if settled is not None:
        return settled
    clean = await load()
    if new.key is not None:
        # From here to the commit, one request per (user, key): a duplicate waits for the first
        # to commit and replays it, rather than find the upload the first one consumed.
        await crud.lock_idempotency_key(session, new.owner_id, new.key)
    # Again: while the image loaded, a concurrent request may have settled this one (and
    # consumed the upload). Stopped here, it stores nothing.
    settled = await _settled(session, new)
    if settled is not None:
        await session.rollback()  # and the key lock goes with the transaction
        return settled
    if clean is None:
        raise unknown_upload()
    if new.key is None:
        # Nothing to hold without a key (the unique upload_id settles a race): no connection
        # waits on the storage write.
        await session.rollback()
    return await _store_and_insert(session, storage, new, clean)


async def _settled(session: AsyncSession, new: NewAnalysis) -> Outcome | None:
    """What earlier requests decided: this key's analysis (422 if the key came with another
    body), or 409 if the upload made an analysis under another key or none."""
    earlier = await crud.find_earlier(session, new.owner_id, new.key, new.upload_id)
    for analysis in earlier:
        if new.key is not None and analysis.idempotency_key == new.key:
            if analysis.request_hash != new.hashed:
                raise Problem(
                    422,
                    "This Idempotency-Key was already used with a different request body.",
                    title="Idempotency-Key reused",
                    type_="urn:ecosort:problem:idempotency-key-reused",
                )
            return Outcome(analysis.id, analysis.status, created=False)
    if earlier:
        raise UploadAlreadyUsed()  # what is left was made from the upload
    return None


async def _store_and_insert(
    session: AsyncSession, storage: Storage, new: NewAnalysis, clean: SanitisedImage
) -> Outcome:
    key = image_key(new.owner_id, clean.sha256)
    await run_in_threadpool(storage.put, key, clean.data, clean.content_type)
    if new.key is None:  # with a key, its lock holds the account already
        await hold_account_lock(session, new.owner_id)
    new_id = await crud.insert_analysis(
        session,
        owner_id=new.owner_id,
        image_key=key,
        image_sha256=clean.sha256,
        idempotency_key=new.key,
        request_hash=new.hashed if new.key is not None else None,
        upload_id=new.upload_id,
    )
    await session.commit()
    if new_id is None:
        # A concurrent request's row holds the upload: the same photo, so the same object, which
        # stays. (Or, from a replica without the key lock during a rollout, the key.) Its
        # answer is ours.
        settled = await _settled(session, new)
        if settled is not None:
            return settled
        if await crud.is_deleted(session, new.owner_id):
            # The account went while this request ran (its token is not revoked yet).
            await _forget_image(storage, key)
            raise AccountDeleted()
        raise Problem(409, "This request conflicted with one since undone; send it again.")
    return Outcome(new_id, "queued", created=True)  # as inserted: no need to read it back


async def _forget_image(storage: Storage, key: str) -> None:
    try:
        await run_in_threadpool(storage.delete, key)
    except Exception:
        # The answer stands without it: the object is in the deleted owner's folder, which
        # nothing reads.
        log.exception("image_of_deleted_account_not_deleted", key=key)
