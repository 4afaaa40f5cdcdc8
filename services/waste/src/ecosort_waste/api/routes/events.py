"""``GET /analyses/{id}/events``: progress as Server-Sent Events, resumable with Last-Event-ID."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Response

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
from ecosort_waste.progress import ProgressEvent, final_data, publish_event, read_state
from ecosort_waste.sse import ProgressResponse, follow

router = APIRouter(tags=["analyses"])


@router.get(
    "/analyses/{analysis_id}/events",
    response_class=ProgressResponse,
    responses={
        200: {
            "description": "`progress` events, then one `completed` or `failed` (data: status, "
            "stage, progress, result, error), each with its seq as `id:` for Last-Event-ID. "
            "The first frame is `retry:` (SSE_RETRY_MILLISECONDS, the reconnection delay); a "
            "comment every SSE_HEARTBEAT_SECONDS keeps an idle stream open. A Last-Event-ID "
            "past the last event sent (from a log since lost) gets the events from the start.",
            "content": {"text/event-stream": {}},
        },
        204: {"description": "Last-Event-ID is the final event: nothing more will come"},
    },
)
async def analysis_events(
    analysis_id: uuid.UUID,
    user: CurrentUser,
    redis: RedisClient,
    hub: HubDep,
    sessionmaker: ReadSessionmakerDep,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> Response:
    owner = user.user_id
    # A session of our own rather than the ReadSession dependency: FastAPI keeps a yield
    # dependency (its session, context manager and cleanup scope) for the whole stream.
    async with sessionmaker() as session:
        status = await crud.owned_status(session, analysis_id, owner)
    if status is None:
        raise Problem(404, f"No analysis {analysis_id}.", title="Analysis not found")
    after_seq = _parse_last_event_id(last_event_id)
    if after_seq > 0:  # a reconnection: what has the log seen since?
        state = await read_state(redis, analysis_id)
        seq = int(state.get("seq", 0))
        if after_seq > seq:
            # An id past the log's last one was given by a log since lost (Redis restarted, the
            # entries expired): the client has seen none of this log's events.
            after_seq = 0
        elif after_seq == seq and state.get("status") in FINAL_STATUSES:
            # An EventSource reconnects after every close; 204 is the SSE way to say "stop".
            # Without it, each reconnection would get the final event again, for ever.
            return Response(status_code=204)

    async def final_state() -> ProgressEvent | None:
        """The final event from the database, published if the log lacks it, so that a
        reconnection with its id is told to stop (above)."""
        async with sessionmaker() as fresh:
            analysis = await crud.get_owned(fresh, analysis_id, owner)
        if analysis is None or analysis.status not in FINAL_STATUSES:
            return None
        data = final_data(
            status=analysis.status,
            stage=analysis.stage,
            progress=analysis.progress,
            result=analysis.result,
            error=analysis.error,
        )
        seq = await publish_event(redis, analysis_id, analysis.status, data)
        return ProgressEvent(seq=seq, event=analysis.status, data=data)

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
            retry_milliseconds=settings.sse_retry_milliseconds,
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
