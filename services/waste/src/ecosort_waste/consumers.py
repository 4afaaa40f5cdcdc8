"""Reactions to other services' events."""

from __future__ import annotations

import asyncio
import uuid

import structlog
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from ecosort_common.events import Event
from ecosort_waste.models import Analysis
from ecosort_waste.storage import Storage, image_prefix, incoming_prefix

log = structlog.get_logger(__name__)


class UserDeletedHandler:
    """`user.deleted` (from users): the person's analyses, corrections and photos go, and so do
    their direct uploads that no analysis has read (originals, with their metadata).

    Photos are removed inside the event's transaction: if the commit fails, the event is
    redelivered and the (idempotent) deletes run again."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def __call__(self, session: AsyncSession, event: Event) -> None:
        user_id = uuid.UUID(str(event.payload["user_id"]))
        deleted = await session.execute(
            delete(Analysis).where(Analysis.owner_id == user_id).returning(Analysis.id)
        )  # corrections go with their analyses (ON DELETE CASCADE)
        # The whole folder: it also holds any photo a request stored before it failed.
        photos = await asyncio.to_thread(self.storage.delete_prefix, image_prefix(user_id))
        uploads = await asyncio.to_thread(self.storage.delete_prefix, incoming_prefix(user_id))
        log.info(
            "user_data_deleted",
            user_id=str(user_id),
            analyses=len(deleted.all()),
            photos=photos,
            unread_uploads=uploads,
        )
