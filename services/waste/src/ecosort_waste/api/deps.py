"""Dependencies of the waste routes: the caller, a database session, storage, enqueue, settings.

They are ``async def`` although they only read ``app.state``: FastAPI runs plain ``def``
dependencies in the thread pool, a hop per dependency per request on the hot read path.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ecosort_common.db import get_session
from ecosort_common.security import Principal, current_principal
from ecosort_waste.config import Settings
from ecosort_waste.storage import Storage

# Hands an analysis id to the pipeline (``ecosort_waste.queue.send_analysis``); synchronous.
Enqueue = Callable[[uuid.UUID], None]


async def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


async def get_enqueue(request: Request) -> Enqueue:
    enqueue: Enqueue = request.app.state.enqueue_analysis
    return enqueue


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session in autocommit mode for single-statement reads: no BEGIN/ROLLBACK round trips."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.read_sessionmaker
    async with sessionmaker() as session:
        yield session


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


CurrentUser = Annotated[Principal, Depends(current_principal)]
DbSession = Annotated[AsyncSession, Depends(get_session)]
ReadSession = Annotated[AsyncSession, Depends(get_read_session)]
StorageDep = Annotated[Storage, Depends(get_storage)]
EnqueueDep = Annotated[Enqueue, Depends(get_enqueue)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def analysis_links(analysis_id: uuid.UUID) -> dict[str, str]:
    path = f"/api/v1/waste/analyses/{analysis_id}"
    return {"self": path, "events": f"{path}/events"}
