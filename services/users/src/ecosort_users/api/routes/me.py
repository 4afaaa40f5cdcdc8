"""/me: a person's own profile, history, statistics, export and account deletion. The user id
always comes from the verified access token, never from the request, so nobody sees another's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession

from ecosort_common.db import get_session
from ecosort_common.errors import Problem
from ecosort_common.pagination import MAX_PAGE_SIZE, Page
from ecosort_common.security import Principal, current_principal
from ecosort_users import crud
from ecosort_users.config import Settings
from ecosort_users.export import attachment_name, export_document
from ecosort_users.models import Profile
from ecosort_users.schemas import (
    ExportOut,
    HistoryItem,
    ProfileOut,
    ProfileUpdate,
    StatsOut,
    profile_out,
)
from ecosort_users.stats import compute_stats

# Every /me route answers 410 once the account is deleted (its token may outlive it).
DELETED: dict[int | str, dict[str, Any]] = {410: {"description": "This account has been deleted."}}
router = APIRouter(prefix="/me", tags=["me"], responses=DELETED)
PrincipalDep = Annotated[Principal, Depends(current_principal)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(_settings)]


def _deleted() -> Problem:
    return Problem(410, "This account has been deleted.", title="Account deleted")


async def _my_profile(
    principal: PrincipalDep, session: SessionDep, settings: SettingsDep
) -> Profile:
    """The caller's profile, created on first use: the app may ask before auth's
    user.registered event has reached us."""
    async with session.begin():
        profile = await crud.my_profile(session, principal.user_id, locale=settings.default_locale)
    if profile is None:
        raise _deleted()
    return profile


ProfileDep = Annotated[Profile, Depends(_my_profile)]


@router.get("", response_model=ProfileOut, summary="My profile")
async def get_me(profile: ProfileDep) -> ProfileOut:
    return profile_out(profile)


@router.patch("", response_model=ProfileOut, summary="Change nickname, region or locale")
async def patch_me(
    body: ProfileUpdate, principal: PrincipalDep, session: SessionDep, settings: SettingsDep
) -> ProfileOut:
    changes = body.model_dump(include=body.model_fields_set)
    async with session.begin():
        profile = await crud.update_profile(
            session,
            principal.user_id,
            changes,
            body.parsed_region(),
            locale=settings.default_locale,
        )
    if profile is None:
        raise _deleted()
    return profile_out(profile)


@router.delete("", status_code=204, summary="Delete my account and all my data")
async def delete_me(principal: PrincipalDep, session: SessionDep) -> Response:
    async with session.begin():
        if not await crud.delete_account(session, principal.user_id):
            raise _deleted()
    return Response(status_code=204)


@router.get("/history", response_model=Page[HistoryItem], summary="My analyses, newest first")
async def get_history(
    profile: ProfileDep,
    session: SessionDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
) -> Page[HistoryItem]:
    return await crud.history_page(session, profile.user_id, cursor=cursor, limit=limit)


@router.get("/stats", response_model=StatsOut, summary="My totals, this month, streaks")
async def get_stats(profile: ProfileDep, session: SessionDep, settings: SettingsDep) -> StatsOut:
    async with session.begin():
        # One snapshot for compute_stats' queries: an analysis recorded between two of them
        # would count in the total but not in its category, or today but not in the days.
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        return await compute_stats(
            session, profile.user_id, timezone=settings.stats_timezone, now=datetime.now(UTC)
        )


@router.get("/export", response_model=ExportOut, summary="All my data, as one JSON document")
async def export_me(
    profile: ProfileDep, request: Request, settings: SettingsDep
) -> StreamingResponse:
    mine = profile_out(profile)
    document = export_document(
        request.app.state.sessionmaker,
        mine,
        timezone=settings.stats_timezone,
        now=datetime.now(UTC),
    )
    return StreamingResponse(
        document,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{attachment_name(mine)}"'},
    )
