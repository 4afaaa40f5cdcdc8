"""``GET /analyses/{id}/events``: progress as Server-Sent Events, resumable with Last-Event-ID."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header

from ecosort_common.errors import Problem
from ecosort_waste import crud
from ecosort_waste.api.deps import (
    CurrentUser,
    HubDep,
    ReadSessionmakerDep,
    RedisClient,
    SettingsDep,
)
from ecosort_waste.models import FINAL_STATUSES
from ecosort_waste.progress import ProgressEvent
from ecosort_waste.sse import ProgressResponse, follow

router = APIRouter(tags=["analyses"])


@router.get(
    "/analyses/{analysis_id}/events",
    response_class=ProgressResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def analysis_events(
    analysis_id: uuid.UUID,
    user: CurrentUser,
    redis: RedisClient,
    hub: HubDep,
    sessionmaker: ReadSessionmakerDep,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> ProgressResponse:
    after_seq = _parse_last_event_id(last_event_id)
    owner = user.user_id
    # A session of our own rather than the ReadSession dependency: FastAPI keeps a yield
    # dependency (its session, context manager and cleanup scope) for the whole stream.
    async with sessionmaker() as session:
        status = await crud.owned_status(session, analysis_id, owner)
    if status is None:
        raise Problem(404, f"No analysis {analysis_id}.", title="Analysis not found")

    async def final_state(last_seq: int) -> ProgressEvent | None:
        async with sessionmaker() as fresh:
            analysis = await crud.get_owned(fresh, analysis_id, owner)
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

    return ProgressResponse(
        follow(
            hub,
            redis,
            str(analysis_id),
            after_seq=after_seq,
            final_state=final_state,
            known_final=status in FINAL_STATUSES,
            heartbeat_seconds=settings.sse_heartbeat_seconds,
            resync_seconds=settings.sse_resync_seconds,
        ),
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
