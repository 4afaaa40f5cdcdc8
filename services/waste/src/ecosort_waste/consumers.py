"""Reactions to other services' events."""

from __future__ import annotations

import asyncio
import uuid

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from ecosort_common.events import Event
from ecosort_waste import crud
from ecosort_waste.storage import Storage, image_prefix, incoming_prefix

log = structlog.get_logger(__name__)


class UserDeletedHandler:
    """`user.deleted` (from users): the person's analyses, corrections and photos go, and so do
    their direct uploads that no analysis has read (originals, with their metadata). A tombstone
    stays, so that a token still valid for a while cannot create new ones.

    Photos are removed inside the event's transaction: if the commit fails, the event is
    redelivered and the (idempotent) deletes run again."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def __call__(self, session: AsyncSession, event: Event) -> None:
        user_id = uuid.UUID(str(event.payload["user_id"]))
        analyses = await crud.delete_account(session, user_id)
        # The whole folder: it also holds any photo a request stored before it failed.
        photos = await asyncio.to_thread(self.storage.delete_prefix, image_prefix(user_id))
        uploads = await asyncio.to_thread(self.storage.delete_prefix, incoming_prefix(user_id))
        log.info(
            "user_data_deleted",
            user_id=str(user_id),
            analyses=analyses,
            photos=photos,
            unread_uploads=uploads,
        )
