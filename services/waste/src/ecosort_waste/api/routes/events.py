"""``GET /analyses/{id}/events``: progress as Server-Sent Events, resumable with Last-Event-ID."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header
from sse_starlette import EventSourceResponse

from ecosort_common.errors import Problem
from ecosort_waste import crud
from ecosort_waste.api.deps import (
    CurrentUser,
    HubDep,
    ReadSession,
    ReadSessionmakerDep,
    RedisClient,
    SettingsDep,
)
from ecosort_waste.models import FINAL_STATUSES
from ecosort_waste.progress import ProgressEvent
from ecosort_waste.sse import follow, sse_fields

router = APIRouter(tags=["analyses"])


@router.get(
    "/analyses/{analysis_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def analysis_events(
    analysis_id: uuid.UUID,
    user: CurrentUser,
    session: ReadSession,
    redis: RedisClient,
    hub: HubDep,
    sessionmaker: ReadSessionmakerDep,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    after_seq = _parse_last_event_id(last_event_id)
    analysis = await crud.get_owned(session, analysis_id, user.user_id)
    if analysis is None:
        raise Problem(404, f"No analysis {analysis_id}.", title="Analysis not found")
    known_final = analysis.status in FINAL_STATUSES
    # The request's session would stay checked out for the whole stream; release it now and
    # open a short one only when the database must be asked again.
    await session.close()

    async def final_state(last_seq: int) -> ProgressEvent | None:
        async with sessionmaker() as fresh:
            analysis = await crud.get_owned(fresh, analysis_id, user.user_id)
        if analysis is None or analysis.status not in FINAL_STATUSES:
            return None
        data: dict[str, Any] = {
            "analysis_id": str(analysis.id),
            "status": analysis.status,
            "stage": analysis.stage,
            "progress": analysis.progress,
            "result": analysis.result,
            "error": analysis.error,
        }
        event = "completed" if analysis.status == "completed" else "failed"
        return ProgressEvent(seq=last_seq + 1, event=event, data=data)

    async def stream() -> AsyncIterator[dict[str, Any]]:
        async for event in follow(
            hub,
            redis,
            str(analysis_id),
            after_seq=after_seq,
            final_state=final_state,
            known_final=known_final,
            heartbeat_seconds=settings.sse_heartbeat_seconds,
            resync_seconds=settings.sse_resync_seconds,
        ):
            yield sse_fields(event)

    return EventSourceResponse(
        stream(),
        ping=0,  # heartbeats come from `follow`, sparing a ping task per stream
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _parse_last_event_id(raw: str | None) -> int:
    if raw is None or raw.strip() == "":
        return 0
    try:
        value = int(raw.strip())
    except ValueError as exc:
        raise Problem(400, "Last-Event-ID must be an event id this stream sent.") from exc
    return max(value, 0)
