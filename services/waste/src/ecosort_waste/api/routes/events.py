"""``GET /analyses/{id}/events``: progress as Server-Sent Events, resumable with Last-Event-ID."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ecosort_common.errors import Problem
from ecosort_common.security import current_principal
from ecosort_waste import crud
from ecosort_waste.api.deps import CurrentUser
from ecosort_waste.api.plain_routes import path_uuid, served_by
from ecosort_waste.config import Settings
from ecosort_waste.models import FINAL_STATUSES
from ecosort_waste.progress import ProgressEvent, final_data, publish_event, read_state
from ecosort_waste.sse import GONE, ProgressResponse, follow

router = APIRouter(tags=["analyses"])


async def stream_events(request: Request) -> Response:
    """`GET /analyses/{analysis_id}/events` as a plain Starlette handler: FastAPI's dependency
    resolution kept its exit stacks and wrappers alive for the whole stream, ~5 kB of an open
    stream's 33 (bench/README.md). The authentication runs first, as on every route."""
    user = await current_principal(request)
    analysis_id = path_uuid(request, "analysis_id")
    state = request.app.state
    settings: Settings = state.settings
    redis: Redis = state.redis
    sessionmaker: async_sessionmaker[AsyncSession] = state.read_sessionmaker
    owner = user.user_id
    async with sessionmaker() as session:
        status = await crud.owned_status(session, analysis_id, owner)
    if status is None:
        raise Problem(404, f"No analysis {analysis_id}.", title="Analysis not found")
    after_seq = _parse_last_event_id(request.headers.get("last-event-id"))
    if after_seq > 0:  # a reconnection: what has the log seen since?
        live = await read_state(redis, analysis_id)
        seq = int(live.get("seq", 0))
        if after_seq > seq:
            # An id past the last seq was handed out before Redis lost the hash and log (a
            # restart, an eviction, their expiry): the client has seen none of this log's
            # events. (Those of the runs that go on come above its id: progress.least_seq.)
            after_seq = 0
        elif after_seq == seq and live.get("status") in FINAL_STATUSES:
            # An EventSource reconnects after every close; 204 is the SSE way to say "stop".
            # Without it, each reconnection would get the final event again, for ever.
            return Response(status_code=204)

    async def final_state() -> ProgressEvent | None:
        """The final event from the database, published if the log lacks it, so that a
        reconnection with its id is told to stop (above); GONE once the analysis is deleted."""
        async with sessionmaker() as fresh:
            analysis = await crud.get_owned(fresh, analysis_id, owner)
        if analysis is None:
            return GONE
        if analysis.status not in FINAL_STATUSES:
            return None
        data = final_data(
            status=analysis.status,
            stage=analysis.stage,
            progress=analysis.progress,
            result=analysis.result,
            error=analysis.error,
        )
        seq = await publish_event(
            redis, analysis_id, analysis.status, data, attempt=analysis.attempts
        )
        return ProgressEvent(seq=seq, event=analysis.status, data=data)

    return ProgressResponse(
        follow(
            state.progress_hub,
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


async def analysis_events(
    analysis_id: uuid.UUID,
    user: CurrentUser,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> Response:
    """Progress of one of your analyses as Server-Sent Events."""
    raise NotImplementedError("served by stream_events")  # pragma: no cover


router.add_api_route(
    "/analyses/{analysis_id}/events",
    analysis_events,
    methods=["GET"],
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
    route_class_override=served_by(stream_events),
)


def _parse_last_event_id(raw: str | None) -> int:
    if raw is None or raw.strip() == "":
        return 0
    try:
        value = int(raw.strip())
    except ValueError as exc:
        raise Problem(400, "Last-Event-ID must be an event id this stream sent.") from exc
    return max(value, 0)
