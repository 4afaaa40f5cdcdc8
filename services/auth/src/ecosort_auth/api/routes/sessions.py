"""A user's signed-in devices: list them, sign one out."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ecosort_auth.api.deps import settings_of
from ecosort_auth.api.schemas import SessionOut
from ecosort_auth.config import Settings
from ecosort_auth.sessions import active_sessions, find_owned_session, revoke_session
from ecosort_common.errors import Problem
from ecosort_common.pagination import Page, page_of
from ecosort_common.security import Principal, current_principal

router = APIRouter(tags=["sessions"])
PrincipalDep = Annotated[Principal, Depends(current_principal)]


@router.get("/sessions", response_model=Page[SessionOut])
async def list_sessions(
    request: Request,
    principal: PrincipalDep,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Page[SessionOut]:
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as db:
        rows = await active_sessions(db, principal.user_id, cursor=cursor, limit=limit)
    page = page_of(rows, limit)
    return Page[SessionOut](
        items=[
            SessionOut(
                id=row.id,
                device=row.device,
                provider=row.provider,
                created_at=row.created_at,
                last_used_at=row.last_used_at,
                current=str(row.id) == principal.session_id,
            )
            for row in page.items
        ],
        next_cursor=page.next_cursor,
    )


@router.delete("/sessions/{session_id}", status_code=204, response_class=Response)
async def delete_session(
    session_id: uuid.UUID,
    request: Request,
    principal: PrincipalDep,
    settings: Annotated[Settings, Depends(settings_of)],
) -> Response:
    """Sign one of your devices out. Someone else's session is answered as not found."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as db, db.begin():
        owned = await find_owned_session(db, principal.user_id, session_id)
        if owned is None:
            raise Problem(404, "No such session.")
        await revoke_session(db, session_id, reason="signed_out_by_user")
    await request.app.state.revocations.revoke(
        [session_id],
        ttl_seconds=settings.auth_access_token_ttl_seconds,
    )
    return Response(status_code=204)
